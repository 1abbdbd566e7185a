"""Trace replay as a state provider: each `read` returns the next row of a `Trace` (a CSV or a built-in)."""

from __future__ import annotations

import os

from ..state import DeviceState, StateProvider
from ..trace import Trace, load_trace_csv

__all__ = ["TraceProvider"]


class TraceProvider(StateProvider):
    """Replays ``trace`` one row per `read`. After the last row it holds the last row (``loop=False``) or
    starts over with times continuing to increase (``loop=True``). Missing fields are those of the trace."""

    name = "trace"

    def __init__(self, trace: Trace | str | os.PathLike[str], *, loop: bool = False, seed: int = 0) -> None:
        if not isinstance(trace, Trace):
            text = os.fspath(trace)
            from ..scenarios import builtin_trace, list_scenarios

            trace = builtin_trace(text, seed=seed) if text in list_scenarios() else load_trace_csv(text)
        self.trace = trace
        self._loop = loop
        self._i = 0

    def read(self) -> DeviceState:
        n = len(self.trace)
        lap, i = divmod(self._i, n)
        if not self._loop and lap > 0:
            lap, i = 0, n - 1
        self._i += 1
        st = self.trace[i]
        if lap == 0:
            return st
        period = self.trace.duration_s + (self.trace[1].time_s - self.trace[0].time_s if n > 1 else 1.0)
        from dataclasses import replace

        return replace(st, time_s=st.time_s + lap * period)
