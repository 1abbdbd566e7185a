"""`benchmarks/latency.py` end to end on the fake backend: results JSON + Markdown, targets judged from the numbers,
and a second run that finds every step done in its state file."""

from __future__ import annotations

import json
from pathlib import Path

from bench_scripts import load_benchmark

bench = load_benchmark("latency")


def test_quick_run_on_the_fake_backend_writes_results_and_resumes(tmp_path: Path) -> None:
    args = ["--quick", "--configs", "fake:1", "--skip-http", "--n-fit", "12", "--n-test", "12",
            "--results", str(tmp_path), "--work", str(tmp_path / "work"), "--device", "test-vm"]
    assert bench.main(args) == 0
    res = json.loads((tmp_path / "latency.quick.json").read_text())
    v = res["configs"]["fake-t1"]["validate"]
    assert v["n_fit"] == 12 and v["n_test"] == 12
    assert v["predictor"]["info"]["selection"]["feature_set"] == "compact"  # 12 subnets: only the compact set
    tr = v["test_retest"]["two full protocol runs"]
    assert 0.0 <= tr["within_10pct"] <= 1.0
    targets = {t["text"].split(":")[1].strip().split(" ")[0]: t for t in res["targets"]}
    assert targets["protocol"]["met"] == (tr["within_10pct"] >= 0.95)
    assert targets["corrected"]["met"] == (v["corrected"]["within_10pct"] >= 0.95)
    text = (tmp_path / "latency.quick.json").read_text()
    assert str(tmp_path) not in text, "results store paths relative to the repo / work / results folders"
    assert v["report"] == "<work>/validate-fake-t1.json" and v["plot"] == "<results>/latency.quick-fake-t1.png"
    md = (tmp_path / "latency.quick.md").read_text()
    assert str(tmp_path) not in md
    assert "Device `test-vm`" in md and "| fake " in md and "compact" in md and "## Targets" in md
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert set(state) == {"build:fake-t1", "validate:fake-t1"}
    finished = {k: s["finished_at"] for k, s in state.items()}
    assert bench.main(args) == 0  # everything already done: nothing measured again
    again = json.loads((tmp_path / "work" / "state.json").read_text())
    assert {k: s["finished_at"] for k, s in again.items()} == finished
    assert json.loads((tmp_path / "latency.quick.json").read_text())["configs"]["fake-t1"]["validate"]["corrected"] == v["corrected"]


def test_load_sampler_keeps_samples_across_invocations(tmp_path: Path) -> None:
    """The shared load sampler: per-interval figures, and with a path the samples of an earlier run come back."""
    import time

    from benchmarks.load_sampler import LoadSampler

    path = tmp_path / "load.jsonl"
    with LoadSampler(path, period_s=0.01) as first:
        time.sleep(0.2)
    n = len(first.samples)
    assert n >= 4 and len(path.read_text().splitlines()) == n
    t0, t1 = first.samples[0][0], first.samples[-1][0]
    assert first.between(t0, t1)["samples"] == n and first.summary()["samples"] == n
    path.write_text(path.read_text() + "not json\n")  # a torn last line from a killed run is skipped
    again = LoadSampler(path, period_s=0.01)
    assert again.samples == first.samples
    assert LoadSampler(period_s=0.01).summary() == {"samples": 0}


def test_portable_paths_are_relative_to_the_repo_or_a_named_folder(tmp_path: Path) -> None:
    from benchmarks.portable_paths import ROOT, portable_paths

    res = {"a": str(ROOT / "benchmarks" / "results" / "x.png"), "b": [str(tmp_path / "w" / "t.csv"), str(tmp_path / "w")],
           "c": str(tmp_path / "r" / "p.png"), "d": "/elsewhere/f", "e": "text with /a/path", "n": 3}
    assert portable_paths(res, work=tmp_path / "w", results=tmp_path / "r") == {
        "a": "benchmarks/results/x.png", "b": ["<work>/t.csv", "<work>"], "c": "<results>/p.png", "d": "/elsewhere/f",
        "e": "text with /a/path", "n": 3}
