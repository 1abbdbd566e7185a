"""State-provider registry: ``create_provider(name, **kwargs)``; implementations are imported on first use.

All providers follow the `device_agents.state.StateProvider` contract (missing sensors degrade to defaults and
are reported, never raised).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..state import StateProvider

__all__ = ["create_provider", "list_providers"]

_PROVIDERS: Mapping[str, str] = {
    "sysfs": "device_agents.providers.sysfs:SysfsProvider",
    "psutil": "device_agents.providers.psutil_provider:PsutilProvider",
    "trace": "device_agents.providers.replay:TraceProvider",
    "network": "device_agents.network:NetworkEstimator",
    "combined": "device_agents.providers.combined:CombinedProvider",
    "throttled": "device_agents.providers.throttled:ThrottledProvider",
}


def list_providers() -> list[str]:
    return list(_PROVIDERS)


def create_provider(name: str, **kwargs: Any) -> StateProvider:
    """Build a registered provider, e.g. ``create_provider("sysfs", sysfs_root=tmp_path)``."""
    if name not in _PROVIDERS:
        raise KeyError(f"unknown state provider {name!r}; known providers: {list(_PROVIDERS)}")
    module_name, _, attr = _PROVIDERS[name].partition(":")
    provider: StateProvider = getattr(importlib.import_module(module_name), attr)(**kwargs)
    return provider
