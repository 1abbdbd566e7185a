"""State-provider registry: ``create_provider(name, **kwargs)``; implementations are imported on first use.

All providers follow the `device_agents.state.StateProvider` contract (missing sensors degrade to defaults and
are reported, never raised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supernet.registry import Registry

from ..state import StateProvider

__all__ = ["PROVIDERS", "create_provider", "list_providers", "live_provider"]

PROVIDERS: Registry[Callable[..., StateProvider]] = Registry("state provider")
PROVIDERS.add("sysfs", "device_agents.providers.sysfs:SysfsProvider")
PROVIDERS.add("psutil", "device_agents.providers.psutil_provider:PsutilProvider")
PROVIDERS.add("trace", "device_agents.providers.replay:TraceProvider")
PROVIDERS.add("network", "device_agents.network:NetworkEstimator")
PROVIDERS.add("combined", "device_agents.providers.combined:CombinedProvider")
PROVIDERS.add("throttled", "device_agents.providers.throttled:ThrottledProvider")


def list_providers() -> list[str]:
    return PROVIDERS.names()


def create_provider(name: str, **kwargs: Any) -> StateProvider:
    """Build a registered provider, e.g. ``create_provider("sysfs", sysfs_root=tmp_path)``.

    An unknown name raises `supernet.registry.UnknownNameError` (a KeyError) listing the known ones.
    """
    provider: StateProvider = PROVIDERS.create(name, **kwargs)
    return provider


def live_provider() -> StateProvider:
    """The device state of this machine: psutil (load = others' CPU share, current frequency) first, sysfs for
    what psutil lacks; re-read at most every 0.1 s (`ThrottledProvider`). The default of `AdaptiveModel` and
    `device_agents.live.run_live`."""
    from .combined import CombinedProvider

    both = CombinedProvider([create_provider("psutil"), create_provider("sysfs")])
    return create_provider("throttled", provider=both, min_interval_s=0.1)
