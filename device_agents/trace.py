"""Recorded or synthetic device timelines (`Trace`) and their CSV form.

CSV columns (header required, order free, units in the names)::

    time_s, battery_pct, charging, cpu_freq_mhz, temp_c, background_load, bandwidth_mbps, rtt_ms
    [cpu_freq_max_mhz]   optional; when absent, the highest cpu_freq_mhz in the file is taken as the max

``charging`` is 1/0, true/false or yes/no. ``rtt_ms`` may be ``inf`` (unreachable). An empty cell is a sensor that
was not available when the trace was recorded: it takes the `STATE_DEFAULTS` value and is listed in the row's
``missing``. Anything else that does not parse is an error naming the file, the data row (1-based, header
excluded), the line and the column.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from supernet.errors import InputError
from supernet.io import atomic_write_text

from .state import DeviceState, state_from_partial

__all__ = ["TRACE_COLUMNS", "Trace", "TraceFormatError", "load_trace_csv", "save_trace_csv"]

TRACE_COLUMNS: tuple[str, ...] = (
    "time_s", "battery_pct", "charging", "cpu_freq_mhz", "temp_c", "background_load", "bandwidth_mbps", "rtt_ms",
)
_OPTIONAL_COLUMNS = ("cpu_freq_max_mhz",)
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class TraceFormatError(InputError):
    """A trace file is malformed. ``row`` is the 1-based data row (header excluded), None for file-level errors."""

    def __init__(self, message: str, *, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


@dataclass(frozen=True)
class Trace:
    """An immutable, time-ordered sequence of `DeviceState` (strictly increasing ``time_s``).

    Behaves as a read-only sequence of states. `at` gives the state in force at any time (zero-order hold: the
    last reading at or before ``time_s``; the first one before the trace starts).
    """

    name: str
    states: tuple[DeviceState, ...]
    description: str = ""
    _times: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        states = tuple(self.states)
        if not states:
            raise ValueError(f"trace {self.name!r}: needs at least one state")
        for i in range(1, len(states)):
            if not states[i].time_s > states[i - 1].time_s:
                raise ValueError(
                    f"trace {self.name!r}: time_s must strictly increase, but state {i} has "
                    f"{states[i].time_s} after {states[i - 1].time_s}"
                )
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "_times", tuple(s.time_s for s in states))

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[DeviceState]:
        return iter(self.states)

    @overload
    def __getitem__(self, i: int) -> DeviceState: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[DeviceState, ...]: ...
    def __getitem__(self, i: int | slice) -> DeviceState | tuple[DeviceState, ...]:
        return self.states[i]

    @property
    def start_s(self) -> float:
        return self._times[0]

    @property
    def end_s(self) -> float:
        return self._times[-1]

    @property
    def duration_s(self) -> float:
        return self._times[-1] - self._times[0]

    def at(self, time_s: float) -> DeviceState:
        i = bisect.bisect_right(self._times, time_s) - 1
        return self.states[max(i, 0)]


def _parse_float(text: str, *, col: str, where: str, row: int) -> float:
    try:
        v = float(text)
    except ValueError:
        raise TraceFormatError(f"{where}: column {col!r} = {text!r} is not a number", row=row) from None
    if math.isnan(v):
        raise TraceFormatError(f"{where}: column {col!r} is NaN", row=row)
    return v


def _parse_bool(text: str, *, col: str, where: str, row: int) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise TraceFormatError(f"{where}: column {col!r} = {text!r} is not a boolean (use 1/0, true/false)", row=row)


def parse_trace_csv(text: str, *, name: str = "trace", source: str = "<string>") -> Trace:
    """Parse the CSV text of a trace; see the module docstring for the format. Pure: no file access."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceFormatError(f"trace {source}: the file is empty; expected a header {list(TRACE_COLUMNS)}") from None
    header = [h.strip() for h in header]
    missing_cols = [c for c in TRACE_COLUMNS if c not in header]
    if missing_cols:
        raise TraceFormatError(
            f"trace {source}: header lacks column(s) {missing_cols}; expected {list(TRACE_COLUMNS)} "
            f"(+ optional {list(_OPTIONAL_COLUMNS)}), got {header}"
        )
    unknown = [c for c in header if c not in TRACE_COLUMNS and c not in _OPTIONAL_COLUMNS]
    if unknown:
        raise TraceFormatError(f"trace {source}: unknown column(s) {unknown}; expected {list(TRACE_COLUMNS)}")
    if len(set(header)) != len(header):
        raise TraceFormatError(f"trace {source}: duplicate column names in header {header}")

    rows: list[dict[str, Any]] = []
    for row_no, cells in enumerate(reader, start=1):
        where = f"trace {source}, row {row_no} (line {reader.line_num})"
        if not cells or all(not c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            raise TraceFormatError(f"{where}: expected {len(header)} cells, got {len(cells)}", row=row_no)
        raw = dict(zip(header, (c.strip() for c in cells), strict=True))
        if not raw["time_s"]:
            raise TraceFormatError(f"{where}: time_s is empty; every row needs a time", row=row_no)
        values: dict[str, Any] = {"time_s": _parse_float(raw["time_s"], col="time_s", where=where, row=row_no)}
        for col, text_value in raw.items():
            if col == "time_s" or not text_value:
                continue
            if col == "charging":
                values[col] = _parse_bool(text_value, col=col, where=where, row=row_no)
            else:
                values[col] = _parse_float(text_value, col=col, where=where, row=row_no)
        checks = (
            ("battery_pct", 0.0, 100.0), ("background_load", 0.0, 1.0), ("cpu_freq_mhz", 1e-9, math.inf),
            ("cpu_freq_max_mhz", 1e-9, math.inf), ("bandwidth_mbps", 0.0, math.inf), ("rtt_ms", 0.0, math.inf),
        )
        for col, lo, hi in checks:
            if col in values and not lo <= values[col] <= hi:
                raise TraceFormatError(
                    f"{where}: column {col!r} = {values[col]} is outside its range [{lo:g}, {hi:g}]", row=row_no
                )
        for col in ("time_s", "cpu_freq_mhz", "temp_c", "bandwidth_mbps"):
            if col in values and not math.isfinite(values[col]):
                raise TraceFormatError(f"{where}: column {col!r} must be finite", row=row_no)
        if rows and values["time_s"] <= rows[-1]["time_s"]:
            raise TraceFormatError(
                f"{where}: time_s {values['time_s']} does not increase (previous row has {rows[-1]['time_s']})",
                row=row_no,
            )
        rows.append(values)
    if not rows:
        raise TraceFormatError(f"trace {source}: has a header but no data rows")

    freqs = [r["cpu_freq_mhz"] for r in rows if "cpu_freq_mhz" in r]
    trace_max = max(freqs) if freqs else None
    states = []
    for r in rows:
        r = dict(r)
        t = r.pop("time_s")
        if "cpu_freq_max_mhz" not in header and trace_max is not None:
            r["cpu_freq_max_mhz"] = trace_max
        st = state_from_partial(t, r)
        states.append(st)
    return Trace(name=name, states=tuple(states))


def load_trace_csv(path: str | os.PathLike[str], *, name: str | None = None) -> Trace:
    """Read a trace CSV. Raises `TraceFormatError` (with ``.row``) for malformed content, FileNotFoundError if absent."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file {str(p)!r} does not exist or is not a file")
    return parse_trace_csv(p.read_text(encoding="utf-8"), name=name or p.stem, source=repr(str(p)))


def format_trace_csv(trace: Trace | Sequence[DeviceState]) -> str:
    """The CSV text of a trace (with the optional ``cpu_freq_max_mhz`` column). Missing sensors are written as
    empty cells so that a round trip keeps them missing."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = (*TRACE_COLUMNS, "cpu_freq_max_mhz")
    w.writerow(cols)
    for st in trace:
        cells = []
        for c in cols:
            if c in st.missing:
                cells.append("")
                continue
            v = getattr(st, c)
            if isinstance(v, bool):
                cells.append("1" if v else "0")
            else:
                cells.append(repr(float(v)) if math.isfinite(v) else "inf")
        w.writerow(cells)
    return buf.getvalue()


def save_trace_csv(trace: Trace | Sequence[DeviceState], path: str | os.PathLike[str]) -> None:
    """Write a trace atomically; `load_trace_csv` reads it back to an equal sequence of states."""
    atomic_write_text(path, format_trace_csv(trace))
