"""Every registry of named implementations answers an unknown name the same way: `UnknownNameError` (an
`InputError` and a `KeyError`) whose plain message names the kind, the name and the known names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from supernet.errors import InputError
from supernet.registry import UnknownNameError


def _space() -> Any:
    from supernet.space import get_space

    return get_space("mnist")


def _lookups() -> dict[str, tuple[Callable[[str], Any], str]]:
    from device_agents.policies import create_policy
    from device_agents.providers import create_provider
    from device_agents.scenarios import builtin_trace, describe_scenario
    from latency_tables.backends import create_backend, supported_precisions
    from nas.strategies import create_strategy, get_strategy_class
    from supernet.data import load_dataset
    from supernet.losses import distillation_losses, feature_losses
    from supernet.quantize import get_target
    from supernet.runtime import backend_version
    from supernet.space import get_space
    from supernet.train import TrainConfig, get_schedule

    return {
        "search space": (get_space, "mnist"),
        "training schedule": (lambda n: get_schedule(n, _space()), "bignas"),
        "recipe": (lambda n: TrainConfig().with_recipe(n), "bignas"),
        "dataset": (load_dataset, "digits"),
        "distillation loss": (lambda n: distillation_losses[n], "kl"),
        "feature loss": (lambda n: feature_losses[n], "hint"),
        "backend": (create_backend, "fake"),
        "backend precisions": (supported_precisions, "fake"),
        "quantization backend": (get_target, "onnxruntime"),
        "runtime backend": (backend_version, "onnxruntime"),
        "search strategy": (get_strategy_class, "random"),
        "search strategy instance": (create_strategy, "random"),
        "policy": (lambda n: create_policy(n, []), "static"),
        "state provider": (create_provider, "psutil"),
        "scenario": (describe_scenario, "steady"),
        "scenario trace": (builtin_trace, "steady"),
    }


@pytest.mark.parametrize("kind", sorted(_lookups()))
def test_unknown_name_raises_one_error_type_listing_the_known_names(kind: str) -> None:
    lookup, known = _lookups()[kind]
    with pytest.raises(UnknownNameError) as info:
        lookup("no-such-name")
    e = info.value
    assert isinstance(e, InputError) and isinstance(e, KeyError)
    msg = str(e)
    assert msg.startswith("unknown ") and "'no-such-name'" in msg and known in msg, msg
    assert not msg.startswith(("'", '"')), "KeyError's repr quoting leaked into the message"
