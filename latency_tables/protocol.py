"""The measurement protocol, in one place, for every backend: built to survive a noisy, shared machine.

Notation
--------
P processes, R rounds per process, n models in a chunk, m timed runs per model and round.

* **Short interleaved rounds.** A round times every model of the chunk once, in a freshly shuffled order:
  ``warmups`` untimed runs, then ``m`` timed runs, keeping the *round median* ``x[p, r, i]`` (seconds).
  Rounds are short (tens of ms for one-layer models), so a slow swing of the machine hits all models alike.
* **Reference probe.** A fixed model (`REFERENCE_SPEC_JSON`) is timed the same way at the start of each round,
  after every ``reference_every`` models and at the end.
* **Round effects.** Each round s = (p, r) gets a slowness factor ``B[s]`` (median 1) from a median polish of
  ``log min_runs x[s, j] ~ a[j] + log B[s]`` over all models j of the round, the probe included: every model
  of a round tells how slow the machine was then, far more steadily than one probe timing.
* **Named statistics of the corrected runs.** Every timed run is divided by its round's ``B``; a model's
  statistics are percentiles of *all* its corrected runs over every round and process (`STATISTICS`):
  ``median`` (p50, the typical latency per inference and the default estimate), ``best`` (the best case, a low
  percentile ``estimator_pct``, default p10: what the protocol estimated before schema 2 of tables), ``p90`` and
  ``p99`` (the tail per inference, for deadlines). Dividing by ``B`` removes the machine's slow swings from all of
  them alike; what is left in the tail is the per-inference jitter. Why the default moved from p10 to the median:
  at 1 thread p10 matched an ordinarily timed quiet median, but at 2 threads (wide run-to-run spread) it sat 6 %
  below it (issue 17). The protocol's ``statistic`` names the estimate that ``latency_ms``, test-retest and the chunk
  alignment use; the others travel beside it (``Measurement.stats_ms``).
  ``ratio_j`` = estimate_j / the probe's estimate (both of the protocol's ``statistic``), and ``reference_ms`` is the
  probe's estimate; every other statistic is put on the same probe scale (statistic_j / the probe's estimate);
  A table stores ``latency_ms_j = ratio_j * reference_ms`` (one probe scale for all its chunks); `measure_models`
  returns each model's own estimate, or, given a table's ``reference_ms``, ``ratio_j * reference_ms`` on the table's
  scale (removing the machine's drift between the two sessions, at the price of the probe's own noise).
* **Session level.** Round effects have median 1 *within* one measurement, so own-clock estimates carry the
  machine's level during that measurement's rounds. A measurement can be shorter than the machine's slow swings
  (30 LiteRT subnets: 3 x 8 rounds in a few seconds), so two measurements of the same models may differ by one
  common factor (issue 5: 0 % of subnets within ±10 %, median 30 %, while process pairs agreed to 0.3 %).
  Test-retest between measurements therefore compares ``ratio_j``; the probe, timed in the same rounds, cancels it.
* **Several processes.** P worker processes (fresh interpreter, memory layout and thread placement each) take
  turns round by round, in an order shuffled per round, and never run at the same time. Each process's own
  estimate is kept (``per_process``) to report test-retest agreement between independent processes.

All randomness (shuffles) comes from ``numpy.random.default_rng`` seeded by `MeasurementProtocol.seed`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

import numpy as np

from latency_tables.backends import Backend, Measurement, Prepared, create_backend
from supernet.errors import InputError

__all__ = [
    "REFERENCE_SPEC_JSON",
    "STATISTICS",
    "ChunkResult",
    "MeasureItem",
    "MeasurementProtocol",
    "Protocol",
    "RoundWorker",
    "agreement",
    "chunked",
    "fit_chunk",
    "measure_items",
    "median_polish",
    "round_effects",
    "summarise",
]

log = logging.getLogger(__name__)

# The reference probe: one fixed MBConv layer (OFA stage-1-like, 14x14, 24 ch, k5 e4), independent of any space.
REFERENCE_SPEC_JSON: dict[str, Any] = {
    "op": "mbconv", "in_hw": 14, "in_ch": 24, "out_ch": 24, "kernel": 5, "stride": 1,
    "expand": 4, "mid_ch": 96, "se": False, "act": "relu",
}
REFERENCE_KEY = "reference-probe"

# The statistics of a latency, by name: what a table, a predictor, a validation and a query record and compare.
# "mean" only comes from imported tables (OFA's yaml, phone benchmark_model logs); the protocol measures the others.
STATISTICS: tuple[str, ...] = ("median", "best", "p90", "p99", "mean")
MEASURED_STATISTICS: tuple[str, ...] = ("median", "best", "p90", "p99")
STATISTIC_TEXT: dict[str, str] = {
    "median": "median (p50) per inference: the typical latency",
    "best": "best case: a low percentile per inference",
    "p90": "p90 per inference (tail)",
    "p99": "p99 per inference (tail, for deadlines)",
    "mean": "mean per inference (as imported)",
}


class StatisticError(InputError):
    """A statistic name that does not exist, or one that is not available where it was asked for."""


def check_statistic(name: str, *, what: str = "statistic") -> str:
    """``name`` if it is one of `STATISTICS`, else `StatisticError` listing them."""
    if name not in STATISTICS:
        raise StatisticError(f"{what} {name!r}: unknown statistic; expected one of {', '.join(STATISTICS)}")
    return name


@dataclass(frozen=True, kw_only=True)
class MeasurementProtocol:
    """How long and how carefully to measure. Presets: `quick` (demos), `default`, `thorough` (benchmarks).

    Attributes:
        rounds: rounds per process.
        runs_per_round: timed inferences per model and round (their median is the round median).
        warmups: untimed inferences per model right before its timed runs in every round.
        load_warmups: untimed inferences per model right after loading it.
        processes: measuring processes (>= 3 recommended; 1 is allowed for quick checks).
        statistic: the estimate (``latency_ms``): one of `MEASURED_STATISTICS`, default the median.
        estimator_pct: percentile of the round-corrected timed runs that the "best" statistic is (0 = minimum).
        reference_every: time the reference probe after every this many models within a round.
        chunk_size: models loaded at once (also the checkpoint granularity of a table build).
        spawn: run processes as separate OS processes (False: sequentially in this process; for tests).
        seed: seeds every shuffle.
    """

    rounds: int = 8
    runs_per_round: int = 20
    warmups: int = 2
    load_warmups: int = 5
    processes: int = 3
    statistic: str = "median"
    estimator_pct: float = 10.0
    reference_every: int = 8
    chunk_size: int = 48
    spawn: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "runs_per_round", "processes", "reference_every", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MeasurementProtocol.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmups", "load_warmups"):
            if getattr(self, name) < 0:
                raise ValueError(f"MeasurementProtocol.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.estimator_pct <= 100.0:
            raise ValueError(f"MeasurementProtocol.estimator_pct must be in [0, 100], got {self.estimator_pct}")
        if self.statistic not in MEASURED_STATISTICS:
            raise StatisticError(f"MeasurementProtocol.statistic {self.statistic!r}: expected one of {', '.join(MEASURED_STATISTICS)}")

    def percentiles(self) -> dict[str, float]:
        """Each measured statistic's percentile of the round-corrected runs."""
        return {"median": 50.0, "best": float(self.estimator_pct), "p90": 90.0, "p99": 99.0}

    @property
    def primary_pct(self) -> float:
        """The percentile of ``statistic`` (the estimate)."""
        return self.percentiles()[self.statistic]

    def describe_statistic(self, name: str | None = None) -> str:
        name = name or self.statistic
        return f"{name}: p{self.percentiles()[name]:g} of all round-effect-corrected timed runs (rounds x processes)"

    @classmethod
    def quick(cls, **overrides: Any) -> MeasurementProtocol:
        """Demo budget: 3 processes x 4 rounds x 10 runs."""
        return cls(**{"rounds": 4, "runs_per_round": 10, "processes": 3, **overrides})

    @classmethod
    def thorough(cls, **overrides: Any) -> MeasurementProtocol:
        """Benchmark budget: 4 processes x 12 rounds x 30 runs."""
        return cls(**{"rounds": 12, "runs_per_round": 30, "processes": 4, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MeasurementProtocol:
        presets: dict[str, Callable[..., MeasurementProtocol]] = {
            "quick": cls.quick,
            "default": cls,
            "thorough": cls.thorough,
        }
        if name not in presets:
            raise ValueError(f"protocol preset {name!r}: expected one of {sorted(presets)}")
        return presets[name](**overrides)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MeasurementProtocol:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"protocol JSON: unknown field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**dict(d))


# Deprecated alias (the old name read like typing.Protocol); new code uses MeasurementProtocol.
Protocol = MeasurementProtocol


@dataclass(frozen=True)
class MeasureItem:
    """One model to measure: an exported artifact (path) or, for backends without export, a module factory.

    ``factory`` must be picklable (e.g. ``functools.partial(build_layer, spec)``) when processes are spawned.
    """

    key: str
    input_shape: tuple[int, ...]
    artifact: str | None = None
    factory: Callable[[], Any] | None = None


@dataclass
class ChunkResult:
    """Raw protocol output for one chunk: every timed run, in seconds.

    ``runs_s`` (P, R, n, m): model i's m timed runs in round r of process p; ``probe_runs_s`` (P, R, k, m): the
    probe's k timings per round. ``delegations``: per model, how the runtime's delegate took its graph
    (`supernet.runtime.Delegation.to_json`, from the first measuring process) or None where not applicable.
    """

    keys: list[str]
    runs_s: np.ndarray
    probe_runs_s: np.ndarray
    delegations: list[dict[str, Any] | None] | None = None

    @property
    def raw_s(self) -> np.ndarray:
        """Round medians (P, R, n)."""
        return np.median(self.runs_s, axis=3)

    @property
    def runs_per_item(self) -> int:
        P, R, _, m = self.runs_s.shape
        return P * R * m

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"keys": self.keys, "runs_us": np.round(self.runs_s * 1e6, 2).tolist(),
                             "probe_runs_us": np.round(self.probe_runs_s * 1e6, 2).tolist()}
        if self.delegations is not None:
            d["delegations"] = self.delegations
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ChunkResult:
        return cls(keys=list(d["keys"]), runs_s=np.asarray(d["runs_us"], dtype=np.float64) / 1e6,
                   probe_runs_s=np.asarray(d["probe_runs_us"], dtype=np.float64) / 1e6,
                   delegations=d.get("delegations"))


# --------------------------------------------------------------------------- the per-process worker
class RoundWorker:
    """Holds the loaded models of one chunk inside one process and times rounds over them (in-process, or
    behind a pipe in a spawned measuring process: `latency_tables._worker`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.items: list[Prepared] = []
        self.reference: Prepared | None = None

    def _load_one(self, item: MeasureItem) -> Prepared:
        source: Any
        if item.artifact is not None:
            source = Path(item.artifact)
        elif item.factory is not None:
            source = item.factory()
        else:
            raise ValueError(f"measure item {item.key!r}: needs an artifact or a factory")
        return self.backend.load(source, item.input_shape, key=item.key)

    def load(self, items: Sequence[MeasureItem], reference: MeasureItem, load_warmups: int) -> list[Any]:
        """Load the chunk; return each item's ``Prepared.extra.get("delegation")`` (None where not reported)."""
        self.unload()
        self.reference = self._load_one(reference)
        self.items = [self._load_one(it) for it in items]
        for p in [self.reference, *self.items]:
            if load_warmups:
                self.backend.time_runs(p, load_warmups)
        return [p.extra.get("delegation") for p in self.items]

    def unload(self) -> None:
        self.items, self.reference = [], None

    def _time(self, p: Prepared, runs: int, warmups: int) -> np.ndarray:
        if warmups:
            self.backend.time_runs(p, warmups)
        return np.asarray(self.backend.time_runs(p, runs), dtype=np.float64)

    def round(self, *, seed: int, runs: int, warmups: int, reference_every: int) -> tuple[np.ndarray, np.ndarray]:
        """One round in a shuffled order: returns (timings per model (n, runs), probe timings (k, runs)), seconds."""
        assert self.reference is not None, "round() before load()"
        n = len(self.items)
        order = np.random.default_rng(seed).permutation(n)
        times = np.empty((n, runs))
        refs = [self._time(self.reference, runs, warmups)]
        for pos, i in enumerate(order):
            times[i] = self._time(self.items[i], runs, warmups)
            if (pos + 1) % reference_every == 0 or pos == n - 1:
                refs.append(self._time(self.reference, runs, warmups))
        return times, np.stack(refs)


class _ProcessHandle:
    """A measuring process seen from the coordinator: the same calls as `RoundWorker`, over a pipe pair.

    The child is a fresh interpreter (``sys.executable``) with this process's ``sys.path``; see `_worker`.
    """

    def __init__(self, backend_name: str, backend_kwargs: dict[str, Any], *, timeout_s: float) -> None:
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        # One thread for any OpenMP/BLAS pool the runtime brings: threads are the backend's explicit setting.
        env.setdefault("OMP_NUM_THREADS", "1")
        code = "from latency_tables._worker import main; main()"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(p2c_r), str(c2p_w), backend_name, json.dumps(backend_kwargs)],
                pass_fds=(p2c_r, c2p_w), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self.send_conn = Connection(p2c_w, readable=False)
        self.recv_conn = Connection(c2p_r, writable=False)
        self.timeout_s = timeout_s
        try:
            self._reply("start")
        except BaseException:
            self.close()
            raise

    def _reply(self, what: str) -> Any:
        if not self.recv_conn.poll(self.timeout_s):
            raise TimeoutError(f"measuring process {self.proc.pid} did not answer {what!r} within {self.timeout_s:.0f} s")
        try:
            status, payload = self.recv_conn.recv()
        except EOFError:
            raise RuntimeError(
                f"measuring process {self.proc.pid} died during {what!r} (exit code {self.proc.poll()})"
            ) from None
        if status != "ok":
            raise RuntimeError(f"measuring process {self.proc.pid} failed during {what!r}:\n{payload}")
        return payload

    def call(self, command: str, **kwargs: Any) -> Any:
        self.send_conn.send((command, kwargs))
        return self._reply(command)

    def close(self) -> None:
        try:
            self.send_conn.send(None)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.send_conn.close()
        self.recv_conn.close()


class _LocalHandle:
    """Same interface as `_ProcessHandle`, in this process (``MeasurementProtocol.spawn=False``)."""

    def __init__(self, backend_name: str, backend_kwargs: dict[str, Any]) -> None:
        self.worker = RoundWorker(create_backend(backend_name, **backend_kwargs))

    def call(self, command: str, **kwargs: Any) -> Any:
        return getattr(self.worker, command)(**kwargs)

    def close(self) -> None:
        self.worker.unload()


class WorkerPool:
    """P measuring processes for one backend; use as a context manager so they are always stopped."""

    def __init__(
        self,
        backend: str,
        backend_kwargs: Mapping[str, Any],
        protocol: MeasurementProtocol,
        *,
        timeout_s: float = 900.0,
    ) -> None:
        self.protocol = protocol
        self.handles: list[_ProcessHandle | _LocalHandle] = []
        kwargs = dict(backend_kwargs)
        try:
            for _ in range(protocol.processes):
                if protocol.spawn:
                    self.handles.append(_ProcessHandle(backend, kwargs, timeout_s=timeout_s))
                else:
                    self.handles.append(_LocalHandle(backend, kwargs))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self.handles:
            h.close()
        self.handles = []

    def measure_chunk(
        self,
        items: Sequence[MeasureItem],
        reference: MeasureItem,
        *,
        chunk_index: int = 0,
        on_round: Callable[[int], None] | None = None,
    ) -> ChunkResult:
        """Run the full protocol (P processes x R interleaved rounds) over one chunk of models."""
        pr = self.protocol
        P, R, n = len(self.handles), pr.rounds, len(items)
        runs_s = np.empty((P, R, n, pr.runs_per_round))
        probes: list[list[np.ndarray]] = [[] for _ in range(P)]
        rng = np.random.default_rng([pr.seed, chunk_index])
        delegations: list[Any] | None = None
        try:
            for h in self.handles:
                loaded = h.call("load", items=list(items), reference=reference, load_warmups=pr.load_warmups)
                if delegations is None and isinstance(loaded, list) and any(d is not None for d in loaded):
                    delegations = loaded
            for r in range(R):
                for p in rng.permutation(P):
                    seed = int(rng.integers(2**31))
                    times, probe = self.handles[p].call(
                        "round", seed=seed, runs=pr.runs_per_round, warmups=pr.warmups,
                        reference_every=pr.reference_every,
                    )
                    runs_s[p, r] = times
                    probes[p].append(probe)
                    if on_round is not None:
                        on_round(n)
        finally:
            for h in self.handles:
                try:
                    h.call("unload")
                except Exception as e:  # noqa: BLE001 - a dead worker is reported by the call that failed
                    log.debug("worker unload failed: %s", e)
        return ChunkResult(keys=[it.key for it in items], runs_s=runs_s, probe_runs_s=np.asarray(probes),
                           delegations=delegations)


def chunked(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``seq`` of ``size`` items (the last may be shorter)."""
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def measure_items(
    items: Sequence[MeasureItem],
    reference: MeasureItem,
    *,
    backend: str,
    backend_kwargs: Mapping[str, Any],
    protocol: MeasurementProtocol,
    on_round: Callable[[int], None] | None = None,
) -> list[ChunkResult]:
    """Measure ``items`` chunk by chunk with one pool of processes (no checkpointing; see `build_table`)."""
    out: list[ChunkResult] = []
    with WorkerPool(backend, backend_kwargs, protocol) as pool:
        for ci, chunk in enumerate(chunked(items, protocol.chunk_size)):
            out.append(pool.measure_chunk(chunk, reference, chunk_index=ci, on_round=on_round))
    return out


# --------------------------------------------------------------------------- estimators
@dataclass(frozen=True)
class ChunkFit:
    """Result of `fit_chunk`. ``estimate_ms`` (n,) and ``per_process_ms`` (n, P): each model's estimate in ms on its
    own clock; ``ratio`` / ``ratio_per_process``: the same divided by the probe's estimate (overall / same process);
    ``probe_runs_ms``: every probe timing, for `reference_ms_of`."""

    keys: list[str]
    estimate_ms: np.ndarray
    per_process_ms: np.ndarray
    ratio: np.ndarray
    ratio_per_process: np.ndarray
    probe_runs_ms: np.ndarray
    raw_ms: np.ndarray
    runs_per_item: int
    stats_ms: dict[str, np.ndarray] = field(default_factory=dict)


def median_polish(logx: np.ndarray, *, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Robust two-way fit ``logx[s, j] ~ a[j] + b[s]`` (s: rounds, j: models) by alternating medians.

    Returns (a (J,), b (S,)) with ``median(b) == 0``.
    """
    a = np.median(logx, axis=0)
    b = np.zeros(logx.shape[0])
    for _ in range(iterations):
        b = np.median(logx - a[None, :], axis=1)
        b -= np.median(b)
        a = np.median(logx - b[:, None], axis=0)
    return a, b


def round_effects(res: ChunkResult) -> np.ndarray:
    """How slow the machine was in each round, as a factor (P, R) with median 1: a median polish of the log of
    each model's fastest run per round (the probe included), so every model of a round informs its effect."""
    P, R, n, _ = res.runs_s.shape
    fastest = np.concatenate([res.runs_s.min(axis=3), res.probe_runs_s.min(axis=(2, 3))[:, :, None]], axis=2)
    _, b = median_polish(np.log(fastest).reshape(P * R, n + 1))
    return np.exp(b).reshape(P, R)


def fit_chunk(res: ChunkResult, pct: float | MeasurementProtocol) -> ChunkFit:
    """The protocol's estimator on one chunk (see the module notation): divide every run by its round's effect, then
    take the ``pct`` percentile of a model's corrected runs (all rounds and processes, and per process), and its
    ratio to the probe's estimate. Given a protocol, ``pct`` is its statistic's percentile and every statistic of
    `MeasurementProtocol.percentiles` is computed too (``stats_ms``)."""
    pcts: dict[str, float] = {}
    if isinstance(pct, MeasurementProtocol):
        pcts, pct = pct.percentiles(), pct.primary_pct
    P, _R, n, _m = res.runs_s.shape
    effect = round_effects(res)[:, :, None, None]
    runs_ms = res.runs_s * 1e3
    per_item = (runs_ms / effect).transpose(2, 0, 1, 3)  # (n, P, R, m)
    est = np.percentile(per_item.reshape(n, -1), pct, axis=1)
    est_pp = np.percentile(per_item.reshape(n, P, -1), pct, axis=2)  # (n, P)
    probe_ms = res.probe_runs_s * 1e3 / effect  # (P, R, k, m)
    probe_est = float(np.percentile(probe_ms, pct))
    probe_pp = np.percentile(probe_ms.reshape(P, -1), pct, axis=1)  # (P,)
    flat = per_item.reshape(n, -1)
    stats = {name: np.percentile(flat, q, axis=1) for name, q in pcts.items()}
    return ChunkFit(
        keys=list(res.keys), estimate_ms=est, per_process_ms=est_pp, ratio=est / probe_est,
        ratio_per_process=est_pp / probe_pp[None, :], probe_runs_ms=probe_ms.ravel(),
        raw_ms=np.median(runs_ms, axis=3), runs_per_item=res.runs_per_item, stats_ms=stats,
    )


def reference_ms_of(fits: Sequence[ChunkFit], pct: float) -> float:
    """The probe's latency in ms over a whole measurement: the ``pct`` percentile of all its timed runs."""
    return float(np.percentile(np.concatenate([f.probe_runs_ms for f in fits]), pct))


def summarise(
    fit: ChunkFit,
    i: int,
    *,
    reference_ms: float | None,
    protocol: MeasurementProtocol,
    environment: Mapping[str, Any] | None = None,
) -> Measurement:
    """The `Measurement` of model ``i`` of a fitted chunk.

    With ``reference_ms`` the latency is ``ratio * reference_ms`` (the probe's scale, e.g. a table's); with None it
    is the model's own estimate in ms (and ``reference_ms`` reports this chunk's probe estimate).
    """
    raw_ms = fit.raw_ms[:, :, i]
    q75, q25 = np.percentile(raw_ms, [75, 25])
    probe_ms = float(fit.estimate_ms[i] / fit.ratio[i])
    if reference_ms is None:
        latency, ref, per_process = float(fit.estimate_ms[i]), probe_ms, fit.per_process_ms[i]
        stats = {k: float(v[i]) for k, v in fit.stats_ms.items()}
    else:
        latency, ref = float(fit.ratio[i] * reference_ms), float(reference_ms)
        per_process = fit.ratio_per_process[i] * reference_ms
        stats = {k: float(v[i] / probe_ms * reference_ms) for k, v in fit.stats_ms.items()}
    stats[protocol.statistic] = latency
    return Measurement(
        statistic=protocol.statistic,
        stats_ms=stats,
        key=fit.keys[i],
        latency_ms=latency,
        ratio=float(fit.ratio[i]),
        reference_ms=ref,
        latencies_ms=tuple(float(v) for v in raw_ms.ravel()),
        p50_ms=float(np.median(raw_ms)),
        iqr_ms=float(q75 - q25),
        per_process_ms=tuple(float(v) for v in per_process),
        runs=fit.runs_per_item,
        rounds=raw_ms.shape[1],
        processes=raw_ms.shape[0],
        warmups=protocol.warmups,
        environment=dict(environment or {}),
    )


@dataclass(frozen=True)
class Agreement:
    """Test-retest agreement: share of models whose two independent measurements agree within ±5 % / ±10 %.

    ``pairs`` counts the (measurement A, measurement B) pairs compared; relative difference is |a - b| / b with
    b the mean of the two.
    """

    n_models: int
    pairs: int
    within_5pct: float
    within_10pct: float
    median_abs_diff_pct: float
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def agreement(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, source: str = "") -> Agreement:
    """Agreement of two independent measurements of the same models (same order)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"agreement: expected two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if x.size == 0:
        return Agreement(0, 0, float("nan"), float("nan"), float("nan"), source)
    rel = np.abs(x - y) / ((x + y) / 2)
    return Agreement(
        n_models=int(x.size), pairs=int(x.size), within_5pct=float(np.mean(rel <= 0.05)),
        within_10pct=float(np.mean(rel <= 0.10)), median_abs_diff_pct=float(np.median(rel) * 100), source=source,
    )


def process_agreement(per_process_ms: np.ndarray, *, source: str = "") -> Agreement | None:
    """Pairwise agreement between the processes' own estimates (shape (n_models, P)); None when P < 2.

    Each process alone is a lower bound on the protocol's test-retest agreement (the combined estimate uses all P).
    """
    m = np.asarray(per_process_ms, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        return None
    w5, w10, med, pairs = [], [], [], 0
    for i in range(m.shape[1]):
        for j in range(i + 1, m.shape[1]):
            a = agreement(m[:, i], m[:, j])
            w5.append(a.within_5pct)
            w10.append(a.within_10pct)
            med.append(a.median_abs_diff_pct)
            pairs += 1
    return Agreement(
        n_models=int(m.shape[0]), pairs=pairs, within_5pct=float(np.mean(w5)), within_10pct=float(np.mean(w10)),
        median_abs_diff_pct=float(np.mean(med)), source=source or "pairs of single-process estimates",
    )
