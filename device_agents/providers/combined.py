"""Merge several providers field by field: the first provider that actually read a field wins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..state import SENSOR_FIELDS, DeviceState, StateProvider, state_from_partial

__all__ = ["CombinedProvider"]


class CombinedProvider(StateProvider):
    """E.g. ``CombinedProvider([SysfsProvider(), NetworkEstimator()])``: device sensors from sysfs, link from the
    estimator. A field missing from every provider is missing from the result. ``time_s`` is the first
    provider's."""

    name = "combined"

    def __init__(self, providers: Sequence[StateProvider]) -> None:
        if not providers:
            raise ValueError("CombinedProvider needs at least one provider")
        self._providers = tuple(providers)

    def read(self) -> DeviceState:
        readings = [p.read() for p in self._providers]
        values: dict[str, Any] = {}
        for f in SENSOR_FIELDS:
            for r in readings:
                if f not in r.missing:
                    values[f] = getattr(r, f)
                    break
        return state_from_partial(readings[0].time_s, values)

    def close(self) -> None:
        for p in self._providers:
            p.close()
