"""The provider contract (`device_agents.testing.ProviderContract`) run over every registered state provider,
each in a full and a degraded environment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents_helpers import DATA, fake_sysfs

from device_agents import StateProvider, builtin_trace, create_provider, list_providers
from device_agents.testing import ProviderContract


class _BrokenPsutil:
    """Every call raises: a platform where psutil has nothing."""

    def __getattr__(self, name: str) -> Any:
        def boom(*a: Any, **k: Any) -> Any:
            raise RuntimeError(f"{name} unsupported")

        return boom


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


def _network(tmp: Path) -> StateProvider:
    p = create_provider("network", clock=_Clock())
    p.record_sample(bandwidth_mbps=20.0, rtt_ms=30.0)  # type: ignore[attr-defined]
    return p


# Each registered provider, in a full and a degraded environment.
FACTORIES: dict[str, list[Callable[[Path], StateProvider]]] = {
    "sysfs": [
        lambda tmp: create_provider("sysfs", sysfs_root=fake_sysfs(tmp)[0], procfs_root=fake_sysfs(tmp)[1]),
        lambda tmp: create_provider("sysfs", sysfs_root=tmp / "empty", procfs_root=tmp / "noproc"),
        lambda tmp: create_provider("sysfs"),  # the real machine, whatever it has
    ],
    "psutil": [
        lambda tmp: create_provider("psutil"),
        lambda tmp: create_provider("psutil", psutil_module=_BrokenPsutil()),
        lambda tmp: create_provider("psutil", psutil_module=SimpleNamespace()),
    ],
    "trace": [
        lambda tmp: create_provider("trace", trace=builtin_trace("steady", duration_s=3)),
        lambda tmp: create_provider("trace", trace=DATA / "recorded_v1.csv", loop=True),
        lambda tmp: create_provider("trace", trace="battery-drain"),
    ],
    "network": [_network, lambda tmp: create_provider("network")],
    "combined": [
        lambda tmp: create_provider(
            "combined", providers=[create_provider("sysfs", sysfs_root=tmp / "none", procfs_root=None), _network(tmp)]
        )
    ],
    "throttled": [
        lambda tmp: create_provider("throttled", provider=create_provider("psutil"), min_interval_s=0.05),
        lambda tmp: create_provider("throttled", provider=create_provider("trace", trace="steady"), min_interval_s=0.0),
        lambda tmp: create_provider("throttled", provider=create_provider("sysfs", sysfs_root=fake_sysfs(tmp)[0],
                                                                          procfs_root=None), clock=_Clock()),
    ],
}
CASES = [pytest.param(f, id=f"{name}-{i}") for name in list_providers() for i, f in enumerate(FACTORIES.get(name, []))]


def test_every_registered_provider_is_covered() -> None:
    assert set(FACTORIES) == set(list_providers())


def test_unknown_provider_lists_known() -> None:
    with pytest.raises(KeyError, match="sysfs"):
        create_provider("bluetooth")


@pytest.mark.parametrize("make_provider", CASES)
class TestEveryProvider(ProviderContract):
    pass
