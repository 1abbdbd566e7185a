"""A live run on this machine (``hwnas agent live``): real inference under injected CPU contention, the agent
against the largest static variant.

Contention: `BusyProcesses` starts spinning child processes (pure-Python loops, one core each). It is bounded in
count (``max_procs``) and time (every child exits by itself after ``max_lifetime_s`` and as soon as its parent is
gone), and `close` (also run on exit from the ``with`` block, including Ctrl-C and exceptions) terminates, then
kills, every child it started.

Protocol (`run_live`):

1. calibrate: each variant runs ``calibration_runs`` times with no injected load, round robin with the live
   loop's pause between rounds (`calibrate`); its median becomes its ``predicted_latency_ms`` for the run
   (latency tables come from another protocol or machine; the agent only needs a reference it then corrects);
2. the deadline is ``deadline_ms`` or ``deadline_factor`` x the calibrated median of the largest variant (the
   most accurate one, which is also the static baseline);
3. the schedule (busy-process count per phase of ``phase_s`` seconds) is replayed; in every request slot both
   models answer one request (the agent and static-largest, alternating who goes first), so both meet the same
   injected contention and the same outside load at the same time;
4. miss rate and mean accuracy per model, overall and per phase.

Optional, for the benchmark (issue 15):

* ``throttle``: a clock slowdown factor per phase, emulated for both models: each local inference is followed by
  a busy wait that stretches it to ``factor`` x its own duration, and the state the agent reads reports
  ``cpu_freq_mhz = cpu_freq_max_mhz / factor`` (as a governor's clock drop would look);
* ``server``: an offload server process (`ServerProcess`) the agent may use (with ``offload_accuracy``), SIGKILLed
  at ``server_kill_at_s`` into the schedule and started again ``server_restart_after_s`` later (in a background
  thread: the request loop never waits for it). Every request must still be answered (the agent falls back to a
  local variant); an exception escaping `AdaptiveModel.predict` counts as a dropped request;
* ``images_per_request``: a request is this many images (run one after the other by batch-1 models).

State: psutil (background load = system CPU minus this process) merged with sysfs. When the CPU frequency is
not readable (VMs, containers) the state falls back to the documented synthetic constant (`NOMINAL_FREQ_MHZ`,
ratio 1) or to the current frequency as its own maximum; the result says which fields were missing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np

from .bundle import Bundle
from .policies import AGENT_POLICY, create_policy
from .providers import live_provider
from .runtime import AdaptiveModel
from .sessions import open_session, run_images
from .state import NOMINAL_FREQ_MHZ, DeviceState, StateProvider
from .variants import Variant, validate_bundle

__all__ = ["DEFAULT_SCHEDULE", "BusyProcesses", "LiveResult", "ThrottledSession", "calibrate", "format_live",
           "live_provider", "run_live"]

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULE: tuple[int, ...] = (0, 2, 0, 4, 1, 3, 0)
"""Busy processes per phase: idle, moderate, idle, heavy, light, moderate-heavy, idle."""

_HARD_MAX_PROCS = 16
_HARD_MAX_LIFETIME_S = 3600.0

# The child: spin until the lifetime is over or the parent is gone (checked every ~10 ms of spinning).
_CHILD = (
    "import os,sys,time\n"
    "end=time.monotonic()+float(sys.argv[1]); ppid=os.getppid()\n"
    "while time.monotonic()<end and os.getppid()==ppid:\n"
    "    for _ in range(20000): pass\n"
)


class BusyProcesses:
    """Up to ``max_procs`` spinning processes; `set_count` grows or shrinks them. A context manager.

    Each child lives at most ``max_lifetime_s`` seconds whatever happens to this process. Not thread-safe.
    """

    def __init__(self, *, max_procs: int | None = None, max_lifetime_s: float = 600.0) -> None:
        cap = max_procs if max_procs is not None else 2 * (os.cpu_count() or 1)
        if not 0 <= cap <= _HARD_MAX_PROCS:
            raise ValueError(f"BusyProcesses.max_procs must be in 0..{_HARD_MAX_PROCS}, got {cap}")
        if not 0 < max_lifetime_s <= _HARD_MAX_LIFETIME_S:
            raise ValueError(f"BusyProcesses.max_lifetime_s must be in (0, {_HARD_MAX_LIFETIME_S}], got {max_lifetime_s}")
        self.max_procs = cap
        self.max_lifetime_s = float(max_lifetime_s)
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def count(self) -> int:
        self._procs = [p for p in self._procs if p.poll() is None]
        return len(self._procs)

    def set_count(self, n: int) -> None:
        if not 0 <= n <= self.max_procs:
            raise ValueError(f"BusyProcesses.set_count: {n} is outside 0..{self.max_procs}")
        self._procs = [p for p in self._procs if p.poll() is None]
        while len(self._procs) < n:
            self._procs.append(subprocess.Popen(
                [sys.executable, "-c", _CHILD, repr(self.max_lifetime_s)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        while len(self._procs) > n:
            _stop([self._procs.pop()])

    def close(self) -> None:
        """Stop every child started here (terminate, wait up to 2 s, then kill). Idempotent."""
        procs, self._procs = self._procs, []
        _stop(procs)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a last resort; close() is the contract
        with contextlib.suppress(Exception):
            self.close()


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.terminate()
    deadline = time.monotonic() + 2.0
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                p.kill()
            p.wait(timeout=2.0)


class ThrottleDial:
    """The current emulated slowdown factor (>= 1), shared by the sessions and the state provider of a run."""

    def __init__(self) -> None:
        self.factor = 1.0


class ThrottledSession:
    """Wraps a session: every run is stretched to ``dial.factor`` x its duration by a busy wait (the CPU stays
    busy, as it would running slower). Has the ``run`` / ``input_shape`` / ``path`` / ``format`` the agent uses."""

    def __init__(self, inner: Any, dial: ThrottleDial) -> None:
        self._inner, self._dial = inner, dial
        self.path, self.format, self.input_shape = inner.path, inner.format, inner.input_shape

    def run(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        y = self._inner.run(x)
        f = self._dial.factor
        if f > 1.0:
            until = t0 + f * (time.perf_counter() - t0)
            while time.perf_counter() < until:
                pass
        return y


class _ThrottledProvider(StateProvider):
    """Reports the emulated clock: f = f_max / factor (f_max = the real one, or `NOMINAL_FREQ_MHZ`)."""

    name = "throttle-emulation"

    def __init__(self, inner: StateProvider, dial: ThrottleDial) -> None:
        self._inner, self._dial = inner, dial

    def read(self) -> DeviceState:
        st = self._inner.read()
        fmax = st.cpu_freq_max_mhz if "cpu_freq_max_mhz" not in st.missing else NOMINAL_FREQ_MHZ
        return replace(st, cpu_freq_max_mhz=fmax, cpu_freq_mhz=fmax / max(self._dial.factor, 1.0))

    def close(self) -> None:
        self._inner.close()


def calibrate(
    variants: Sequence[Variant], x: np.ndarray, *, runs: int = 30, interval_s: float = 0.0, threads: int = 1
) -> dict[str, float]:
    """Median latency (ms) of each variant on ``x`` (resized per variant), measured in the regime of the live
    loop: round robin over the variants with ``interval_s`` of sleep after each round (a model run right after
    itself, with warm caches and a busy core, is 2-3x faster than one run after a pause), after 3 warm-up rounds."""
    vs = validate_bundle(variants)
    sessions = [open_session(v.model_path or "", threads=threads) for v in vs]
    times: list[list[float]] = [[] for _ in vs]
    for r in range(3 + runs):
        for j, sess in enumerate(sessions):
            t0 = time.perf_counter()
            run_images(sess, x)
            if r >= 3:
                times[j].append((time.perf_counter() - t0) * 1e3)
        if interval_s:
            time.sleep(interval_s)
    return {v.name: float(np.median(t)) for v, t in zip(vs, times, strict=True)}


@dataclass(frozen=True)
class LiveResult:
    """Outcome of `run_live`; ``models`` maps "agent" / "static-largest" to their metrics, ``phases`` lists
    per-phase metrics, ``conditions`` the machine and state readings."""

    deadline_ms: float
    calibrated_ms: dict[str, float]
    models: dict[str, dict[str, Any]]
    phases: list[dict[str, Any]]
    conditions: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"deadline_ms": self.deadline_ms, "calibrated_ms": self.calibrated_ms, "models": self.models,
                "phases": self.phases, "conditions": self.conditions}


def _summary(records: Sequence[Any]) -> dict[str, Any]:
    if not records:
        return {"n_requests": 0, "miss_rate": None, "mean_accuracy": None, "p50_ms": None, "p95_ms": None}
    lat = np.array([r.latency_ms for r in records])
    return {
        "n_requests": len(records),
        "miss_rate": float(np.mean([r.missed for r in records])),
        "mean_accuracy": float(np.mean([r.accuracy for r in records])),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "switches": sum(1 for a, b in itertools.pairwise(records) if a.ran != b.ran),
        "runs_per_variant": {n: sum(1 for r in records if r.ran == n) for n in dict.fromkeys(r.ran for r in records)},
    }


def run_live(
    variants: Sequence[Variant] | Bundle,
    *,
    schedule: Sequence[int] = DEFAULT_SCHEDULE,
    phase_s: float = 10.0,
    request_interval_s: float = 0.05,
    deadline_ms: float | None = None,
    deadline_factor: float = 1.5,
    calibration_runs: int = 30,
    max_procs: int | None = None,
    seed: int = 0,
    provider_factory: Callable[[], StateProvider] = live_provider,
    progress: Callable[[str], None] | None = None,
    throttle: Sequence[float] | None = None,
    server: Any = None,
    offload_accuracy: float | None = None,
    server_kill_at_s: float | None = None,
    server_restart_after_s: float = 3.0,
    offload_timeout_s: float = 0.5,
    images_per_request: int = 1,
) -> LiveResult:
    """Run the agent and static-largest side by side under the injected ``schedule``; see the module docstring.

    The run takes about ``len(schedule) * phase_s`` seconds plus calibration. Busy processes are always stopped
    before this returns or raises.
    """
    vs = variants.variants() if isinstance(variants, Bundle) else validate_bundle(variants)
    if not schedule or any(n < 0 for n in schedule):
        raise ValueError(f"run_live: schedule must be non-empty counts >= 0, got {list(schedule)}")
    if not (phase_s > 0 and request_interval_s >= 0):
        raise ValueError("run_live: phase_s must be > 0 and request_interval_s >= 0")
    busy_cap = max_procs if max_procs is not None else max(max(schedule), 2 * (os.cpu_count() or 1))
    if max(schedule) > busy_cap:
        raise ValueError(f"run_live: schedule asks for {max(schedule)} busy processes, the cap is {busy_cap}")
    if throttle is not None and (len(throttle) != len(schedule) or any(not f >= 1.0 for f in throttle)):
        raise ValueError(f"run_live: throttle needs one factor >= 1 per phase ({len(schedule)}), got {list(throttle)}")
    if images_per_request < 1:
        raise ValueError(f"run_live: images_per_request must be >= 1, got {images_per_request}")
    say = progress or (lambda msg: None)
    sessions = [open_session(v.model_path or "") for v in vs]
    shape = max((s.input_shape for s in sessions), key=lambda s: int(np.prod([max(d, 1) for d in s])))
    shape = (images_per_request, *(max(d, 1) for d in shape[1:]))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)

    say("calibrating variants (no injected load)")
    cal = calibrate(vs, x, runs=calibration_runs, interval_s=request_interval_s)
    calibrated = validate_bundle([replace(v, predicted_latency_ms=max(cal[v.name], 1e-3)) for v in vs])
    # "largest" = the most accurate variant (the biggest network), not the slowest by calibration noise
    largest = max(calibrated, key=lambda v: (v.accuracy, v.predicted_latency_ms))
    deadline = float(deadline_ms) if deadline_ms is not None else round(deadline_factor * cal[largest.name], 4)

    probe = provider_factory()
    first = probe.read()
    probe.close()
    conditions: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "missing_state_fields": list(first.missing),
        "cpu_freq_mhz_start": first.cpu_freq_mhz,
        "cpu_freq_max_mhz_start": first.cpu_freq_max_mhz,
        "frequency_note": _frequency_note(first.missing),
        "schedule_busy_procs": list(schedule), "phase_s": phase_s, "request_interval_s": request_interval_s,
        "input_shape": list(shape), "threads_per_session": 1, "images_per_request": images_per_request,
        "throttle_factors": list(throttle) if throttle is not None else None,
    }
    dial = ThrottleDial()

    def provider() -> StateProvider:
        return _ThrottledProvider(provider_factory(), dial) if throttle is not None else provider_factory()

    wrap = (lambda sess: ThrottledSession(sess, dial)) if throttle is not None else None
    client = None
    if server is not None:
        from .client import OffloadClient

        client = OffloadClient(server.url, timeout_s=offload_timeout_s)
    models = {
        "agent": AdaptiveModel(calibrated, deadline_ms=deadline, policy=AGENT_POLICY, provider=provider(),
                               offload=client, offload_accuracy=offload_accuracy, session_wrapper=wrap,
                               probe_batch=images_per_request, probe_interval_s=1.0),
        "static-largest": AdaptiveModel(calibrated, deadline_ms=deadline,
                                        policy=create_policy("static", calibrated, which=largest.name),
                                        provider=provider(), session_wrapper=wrap),
    }
    dropped = {k: 0 for k in models}
    errors: list[str] = []
    server_events: list[dict[str, Any]] = []
    restart_thread: Any = None
    records: dict[str, list[Any]] = {k: [] for k in models}
    phase_rows: list[dict[str, Any]] = []
    loads: list[float] = []
    import threading

    def restart() -> None:
        try:
            server.start()
            server_events.append({"event": "restarted", "t_s": time.monotonic() - t_run0, "pid": server.pid})
        except Exception as e:  # noqa: BLE001 - reported, the run goes on without the server
            server_events.append({"event": "restart failed", "t_s": time.monotonic() - t_run0, "error": str(e)})

    t_run0 = time.monotonic()
    try:
        with BusyProcesses(max_procs=busy_cap, max_lifetime_s=len(schedule) * phase_s + 120.0) as busy:
            slot = 0
            for i, n_busy in enumerate(schedule):
                busy.set_count(n_busy)
                dial.factor = float(throttle[i]) if throttle is not None else 1.0
                say(f"phase {i + 1}/{len(schedule)}: {n_busy} busy process(es), clock / {dial.factor:g}, "
                    f"{phase_s:g} s")
                start = {k: len(r) for k, r in records.items()}
                end_t = time.monotonic() + phase_s
                while time.monotonic() < end_t:
                    now = time.monotonic() - t_run0
                    if server is not None and server_kill_at_s is not None and not server_events and now >= server_kill_at_s:
                        server_events.append({"event": "killed", "t_s": now, "pid": server.pid})
                        server.kill()
                    if (server is not None and len(server_events) == 1 and restart_thread is None
                            and now >= (server_kill_at_s or 0.0) + server_restart_after_s):
                        restart_thread = threading.Thread(target=restart, name="server-restart", daemon=True)
                        restart_thread.start()
                    order = list(models) if slot % 2 == 0 else list(reversed(list(models)))
                    for k in order:
                        try:
                            p = models[k].predict(x)
                        except Exception as e:  # noqa: BLE001 - a dropped request is the measurement
                            dropped[k] += 1
                            errors.append(f"{k}: {type(e).__name__}: {e}")
                            continue
                        records[k].append(p.record)
                    if records["agent"]:
                        loads.append(records["agent"][-1].state.background_load)
                    slot += 1
                    if request_interval_s:
                        time.sleep(request_interval_s)
                row: dict[str, Any] = {"phase": i, "busy_procs": n_busy, "throttle": dial.factor}
                for k, r in records.items():
                    row[k] = _summary(r[start[k]:])
                phase_rows.append(row)
    finally:
        for m in models.values():
            m.close()
        if restart_thread is not None:
            restart_thread.join(timeout=60)
    conditions["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    conditions["background_load_seen"] = {"mean": float(np.mean(loads)) if loads else None,
                                          "max": float(np.max(loads)) if loads else None}
    summaries = {k: {**_summary(r), "dropped": dropped[k],
                     "fallbacks": sum(1 for x in r if x.fallback),
                     "offloaded": sum(1 for x in r if x.offload and not x.fallback)} for k, r in records.items()}
    if server is not None:
        conditions["server"] = {"url": server.url, "events": server_events, "kill_at_s": server_kill_at_s,
                                "restart_after_s": server_restart_after_s, "offload_timeout_s": offload_timeout_s}
        kill_t = next((e["t_s"] for e in server_events if e["event"] == "killed"), None)
        back_t = next((e["t_s"] for e in server_events if e["event"] == "restarted"), None)
        if kill_t is not None:
            t_of = [x.time_s for x in records["agent"]]
            # records' time_s counts from the AdaptiveModel's creation, a little before t_run0
            off0 = models["agent"].started_monotonic_s - t_run0
            around = [x for x, t in zip(records["agent"], t_of, strict=True)
                      if kill_t - 1.0 <= t + off0 <= (back_t if back_t is not None else kill_t) + 5.0]
            conditions["server"]["around_kill"] = {"requests": len(around),
                                                   "missed": sum(1 for x in around if x.missed),
                                                   "fallbacks": sum(1 for x in around if x.fallback)}
    conditions["errors"] = errors[:20]
    return LiveResult(deadline_ms=deadline, calibrated_ms=cal, models=summaries, phases=phase_rows,
                      conditions=conditions)


def _frequency_note(missing: Sequence[str]) -> str:
    cur, mx = "cpu_freq_mhz" in missing, "cpu_freq_max_mhz" in missing
    if cur and mx:
        return "CPU frequency not readable: synthetic constant (NOMINAL_FREQ_MHZ, ratio 1) used"
    if mx:
        return "maximum CPU frequency not readable: the current frequency stands in for it (ratio 1)"
    if cur:
        return "current CPU frequency not readable: the maximum stands in for it (ratio 1)"
    return "CPU frequency read from the system"


def format_live(result: LiveResult) -> str:
    """A Markdown table of a live result (used by the CLI and the benchmark)."""
    lines = ["| model | requests | miss rate | mean accuracy | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
    for k, m in result.models.items():
        lines.append(f"| {k} | {m['n_requests']} | {m['miss_rate']:.2%} | {m['mean_accuracy']:.4f} | "
                     f"{m['p50_ms']:.3f} | {m['p95_ms']:.3f} |")
    lines += ["", "| phase | busy procs | agent miss | agent acc | static-largest miss |", "|---|---|---|---|---|"]
    for r in result.phases:
        a, s = r["agent"], r["static-largest"]
        if a["n_requests"]:
            lines.append(f"| {r['phase']} | {r['busy_procs']} | {a['miss_rate']:.2%} | {a['mean_accuracy']:.4f} | "
                         f"{s['miss_rate']:.2%} |")
    return "\n".join(lines)

