"""benchmarks/ofa_subnets.py end to end on the cheapest device (PyTorch eager, no export), tiny settings: the
results file the few-shot benchmark reads (ArchConfig JSON, per-device environment, median/p90/p99) and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_scripts import load_benchmark  # type: ignore[import-not-found]

from supernet.space import ArchConfig, get_space


def test_ordinary_timing_writes_archs_statistics_and_resumes(tmp_path: Path) -> None:
    mod = load_benchmark("ofa_subnets")
    args = ["--n", "2", "--devices", "torch-eager-fp32-t1", "--processes", "2", "--warmup", "1", "--runs", "3",
            "--batch", "1", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json"), "--lock", ""]
    assert mod.main(args) == 0
    d = json.loads((tmp_path / "o.json").read_text())
    space = get_space("ofa-mbv3")
    archs = {k: space.canonical(ArchConfig.from_json(v)) for k, v in d["archs"].items()}
    assert [a.resolution for a in archs.values()] == [128, 132]  # resolutions cycle over the space's
    dev = d["devices"]["torch-eager-fp32-t1"]
    assert dev["environment"]["runtime"] == "torch eager" and dev["n_done"] == 2
    for s in dev["subnets"].values():
        assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["runs"] == 6
        assert len(s["process_medians_ms"]) == 2
    lines = (tmp_path / "w" / "state.jsonl").read_text().splitlines()
    assert mod.main(args) == 0  # resumed: every (batch, process) is done, nothing is timed again
    assert (tmp_path / "w" / "state.jsonl").read_text().splitlines() == lines


def test_spread_schedule_runs_processes_apart_and_retime_keeps_the_old_records(tmp_path: Path) -> None:
    mod = load_benchmark("ofa_subnets")
    base = ["--n", "3", "--devices", "torch-eager-fp32-t1", "--processes", "2", "--warmup", "1", "--runs", "2",
            "--batch", "1", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json"), "--lock", ""]
    assert mod.main([*base, "--schedule", "batched"]) == 0
    state = tmp_path / "w" / "state.jsonl"
    first = [json.loads(x) for x in state.read_text().splitlines()]
    assert [(r["batch"], r["process"]) for r in first] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert mod.main([*base, "--retime"]) == 0  # default schedule: spread
    again = [json.loads(x) for x in state.read_text().splitlines()]
    assert [r["process"] for r in again] == [0, 0, 0, 1, 1, 1]  # every batch's first process before any second
    assert sorted(r["batch"] for r in again[:3]) == [0, 1, 2] and {r["schedule"] for r in again} == {"spread"}
    kept = [json.loads(x) for x in (tmp_path / "w" / "state.superseded.jsonl").read_text().splitlines()]
    assert [r["finished_at"] for r in kept] == [r["finished_at"] for r in first]
    dev = json.loads((tmp_path / "o.json").read_text())["devices"]["torch-eager-fp32-t1"]
    assert dev["schedule"] == ["spread"] and dev["n_done"] == 3
