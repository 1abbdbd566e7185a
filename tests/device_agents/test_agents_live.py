"""Live run machinery: busy processes are bounded and always cleaned up; a tiny live run; the benchmark pieces."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from device_agents import Variant
from device_agents.benchmark import decision_timing, render_markdown, simulation_benchmark
from device_agents.bundle import build_bundle
from device_agents.live import BusyProcesses, run_live
from hwnas.commands.agent import app


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def _gone(pids: list[int]) -> bool:
    return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


def test_busy_processes_grow_shrink_and_close() -> None:
    before = _children()
    with BusyProcesses(max_procs=3, max_lifetime_s=60) as busy:
        busy.set_count(3)
        pids = busy.pids
        assert busy.count == 3 and set(pids) <= _children()
        busy.set_count(1)
        assert busy.count == 1
        with pytest.raises(ValueError, match="outside 0..3"):
            busy.set_count(4)
    assert _gone(pids) and _children() == before


def test_busy_processes_cleaned_up_on_exception() -> None:
    with pytest.raises(KeyboardInterrupt), BusyProcesses(max_procs=2, max_lifetime_s=60) as busy:
        busy.set_count(2)
        pids = busy.pids
        raise KeyboardInterrupt  # what Ctrl-C raises
    assert _gone(pids)


def test_busy_processes_are_bounded_and_end_by_themselves() -> None:
    with pytest.raises(ValueError, match="max_procs"):
        BusyProcesses(max_procs=17)
    with pytest.raises(ValueError, match="max_lifetime_s"):
        BusyProcesses(max_lifetime_s=1e6)
    busy = BusyProcesses(max_procs=1, max_lifetime_s=0.3)
    busy.set_count(1)
    proc = busy._procs[0]
    try:
        assert proc.wait(timeout=30) == 0  # exited on its own after its lifetime
    except subprocess.TimeoutExpired:
        pytest.fail("busy child outlived its max_lifetime_s")
    finally:
        busy.close()


def test_tiny_live_run(tiny_variants: tuple[Variant, ...]) -> None:
    before = _children()
    res = run_live(tiny_variants, schedule=(0, 1), phase_s=0.3, request_interval_s=0.0, calibration_runs=2,
                   max_procs=1)
    assert set(res.models) == {"agent", "static-largest"}
    n = res.models["agent"]["n_requests"]
    assert n > 0 and res.models["static-largest"]["n_requests"] == n  # paired requests
    assert 0 <= res.models["agent"]["miss_rate"] <= 1
    assert res.models["static-largest"]["runs_per_variant"] == {tiny_variants[-1].name: n}
    assert [p["busy_procs"] for p in res.phases] == [0, 1]
    assert res.deadline_ms == pytest.approx(1.5 * res.calibrated_ms[tiny_variants[-1].name], abs=1e-4)  # rounded
    c = res.conditions
    assert "frequency_note" in c and isinstance(c["missing_state_fields"], list)
    json.dumps(res.to_json())
    assert _children() == before
    with pytest.raises(ValueError, match="cap"):
        run_live(tiny_variants, schedule=(5,), max_procs=2)


def test_cli_live_and_serve_model_errors(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    build_bundle(tiny_variants, tmp_path / "b")
    runner = CliRunner()
    res = runner.invoke(app, ["live", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "o"),
                              "--schedule", "0", "--phase-s", "0.2", "--request-interval-s", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "live.json").read_text())["models"]["agent"]["n_requests"] > 0
    res = runner.invoke(app, ["live", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "o"), "--schedule", "x"])
    assert res.exit_code != 0 and "--schedule" in res.output
    res = runner.invoke(app, ["live", "--bundle", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "manifest" in res.output
    res = runner.invoke(app, ["serve-model"])
    assert res.exit_code != 0 and "exactly one" in res.output
    res = runner.invoke(app, ["serve-model", "--bundle", str(tmp_path / "b"), "--variant", "ghost"])
    assert res.exit_code != 0 and "ghost" in res.output


def test_benchmark_pieces() -> None:
    t = decision_timing(n=300)
    assert t["n"] == 300 and t["p50_us"] <= t["p99_us"] <= t["max_us"]  # no bound on time: shared machine
    sim = simulation_benchmark(seeds=(0,), duration_s=20)
    assert set(sim) == {"steady", "thermal-throttling", "battery-drain", "network-outages", "bursty-contention"}
    for d in sim.values():
        assert {"kalman", "oracle", "static-largest", "kalman+server", "oracle+server"} <= set(d["policies"])
        assert d["target_met"] in (None, True, False)
    r = {"quick": True, "machine": {"platform": "x", "cpu_count": 2, "loadavg": None, "note": "n"},
         "simulation": {"variants": "v", "deadline_ms": 50.0, "request_rate_hz": 2.0, "seeds": [0], "duration_s": 20,
                        "scenarios": sim}, "decision_time": {"on-device": t}}
    md = render_markdown(r)
    assert "| thermal-throttling | kalman |" in md and "Decision time" in md


def test_live_run_with_throttling_and_a_server_killed_mid_run(tiny_variants: tuple[Variant, ...]) -> None:
    """The agent gets a real model server (a child process), which is SIGKILLed mid-run and restarted: no request
    is dropped (offloads fall back to a local variant), both events are recorded, and the emulated clock drop is
    what the agent's state says."""
    import sys

    from device_agents.live import ThrottleDial, _ThrottledProvider
    from device_agents.server_process import ServerProcess, free_port
    from device_agents.state import DeviceState, StateProvider

    port = free_port()
    cmd = [sys.executable, "-c", "from hwnas.cli import main; main()", "serve-model", "--model",
           str(tiny_variants[-1].model_path), "--accuracy", "0.95", "--port", str(port)]
    before = _children()
    server = ServerProcess(cmd, url=f"http://127.0.0.1:{port}")
    server.start()
    try:
        # a generous deadline and a more accurate server: the agent offloads, so the kill hits real requests
        res = run_live(tiny_variants, schedule=(0, 0, 1), throttle=(1.0, 3.0, 1.0), phase_s=1.5,
                       request_interval_s=0.01, calibration_runs=2, max_procs=1, server=server, offload_accuracy=0.95,
                       server_kill_at_s=1.0, server_restart_after_s=0.5, images_per_request=2, deadline_ms=500.0,
                       offload_timeout_s=2.0)
    finally:
        server.stop()
    a = res.models["agent"]
    assert a["dropped"] == 0 and a["n_requests"] == res.models["static-largest"]["n_requests"] > 0
    assert a["offloaded"] > 0 and a["fallbacks"] >= 1  # it used the server, and the kill made it fall back
    events = [e["event"] for e in res.conditions["server"]["events"]]
    assert events[:1] == ["killed"] and events[1:] in (["restarted"], ["restart failed"])
    assert [p["throttle"] for p in res.phases] == [1.0, 3.0, 1.0]
    assert res.conditions["images_per_request"] == 2
    assert _children() == before

    class Fixed(StateProvider):
        name = "fixed"

        def read(self) -> DeviceState:
            return DeviceState(time_s=0.0, battery_pct=50.0, charging=False, cpu_freq_mhz=2000.0,
                               cpu_freq_max_mhz=2000.0, temp_c=40.0, background_load=0.0, bandwidth_mbps=0.0,
                               rtt_ms=float("inf"))

    dial = ThrottleDial()
    dial.factor = 2.5
    assert _ThrottledProvider(Fixed(), dial).read().cpu_freq_mhz == pytest.approx(800.0)
