from __future__ import annotations

import math
from pathlib import Path

import pytest
from agents_helpers import DATA

from device_agents import (
    Trace,
    TraceFormatError,
    builtin_trace,
    list_scenarios,
    load_trace_csv,
    save_trace_csv,
)
from device_agents.trace import TRACE_COLUMNS, parse_trace_csv

HEADER = ",".join(TRACE_COLUMNS)


def test_round_trip_builtin(tmp_path: Path) -> None:
    for name in list_scenarios():
        t = builtin_trace(name, seed=1, duration_s=20)
        save_trace_csv(t, tmp_path / f"{name}.csv")
        back = load_trace_csv(tmp_path / f"{name}.csv")
        assert back.states == t.states


def test_checked_in_recording_still_loads() -> None:
    """Fixture in the spec's 8-column format: no max-clock column, empty cells, inf RTT, true/false."""
    t = load_trace_csv(DATA / "recorded_v1.csv")
    assert len(t) == 5 and t.name == "recorded_v1"
    assert all(s.cpu_freq_max_mhz == 1800.0 for s in t)  # highest clock in the file
    assert t[2].missing == ("temp_c",) and t[2].temp_c == 40.0
    assert t[3].bandwidth_mbps == 0.0 and math.isinf(t[3].rtt_ms)
    assert t[4].charging and not t[0].charging
    assert t.at(2.5) == t[2] and t.at(-1.0) == t[0] and t.at(99.0) == t[4]


@pytest.mark.parametrize(
    ("rows", "bad_row", "words"),
    [
        (["0,50,0,1000,40,0.1,10,20", "1,50,0,fast,40,0.1,10,20"], 2, "cpu_freq_mhz"),
        (["0,50,0,1000,40,0.1,10,20", "1,50,0,1000,40,1.5,10,20"], 2, "background_load"),
        (["0,50,maybe,1000,40,0.1,10,20"], 1, "charging"),
        (["0,50,0,1000,40,0.1,10,20", "2,50,0,1000,40,0.1,10,20", "1,50,0,1000,40,0.1,10,20"], 3, "does not increase"),
        (["0,50,0,1000,40,0.1,10"], 1, "expected 8 cells"),
        (["0,150,0,1000,40,0.1,10,20"], 1, "battery_pct"),
        ([",50,0,1000,40,0.1,10,20"], 1, "time_s is empty"),
        (["0,50,0,1000,nan,0.1,10,20"], 1, "NaN"),
    ],
)
def test_malformed_rows_name_the_row(rows: list[str], bad_row: int, words: str) -> None:
    text = "\n".join([HEADER, *rows]) + "\n"
    with pytest.raises(TraceFormatError, match=words) as info:
        parse_trace_csv(text, source="t.csv")
    assert info.value.row == bad_row
    assert f"row {bad_row} (line {bad_row + 1})" in str(info.value)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="lacks column"):
        parse_trace_csv("time_s,battery_pct\n0,50\n")
    with pytest.raises(TraceFormatError, match="empty"):
        parse_trace_csv("")
    with pytest.raises(TraceFormatError, match="no data rows"):
        parse_trace_csv(HEADER + "\n")
    with pytest.raises(TraceFormatError, match="unknown column"):
        parse_trace_csv(HEADER + ",humidity\n0,50,0,1000,40,0.1,10,20,3\n")
    with pytest.raises(FileNotFoundError):
        load_trace_csv(tmp_path / "nope.csv")


def test_trace_value_checks_order() -> None:
    t = builtin_trace("steady", duration_s=5)
    with pytest.raises(ValueError, match="strictly increase"):
        Trace(name="x", states=(t[1], t[0]))
    with pytest.raises(ValueError, match="at least one"):
        Trace(name="x", states=())
