"""The policy contract (`device_agents.testing.PolicyContract`) run over every registered policy."""

from __future__ import annotations

import pytest

from device_agents import Variant, create_policy, list_policies
from device_agents.testing import PolicyContract


@pytest.mark.parametrize("name", list_policies())
class TestEveryPolicy(PolicyContract):
    pass


def test_unknown_policy_lists_known(variants: tuple[Variant, ...]) -> None:
    with pytest.raises(KeyError, match="kalman"):
        create_policy("psychic", variants)


def test_registry_has_the_required_policies() -> None:
    assert {"static-smallest", "static-middle", "static-largest", "greedy", "greedy-frequency", "kalman",
            "oracle"} <= set(list_policies())
