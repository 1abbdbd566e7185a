"""`AdaptiveModel`: real inference with the variant a policy picks per request, offload to a model server with
local fallback, and a log of every decision with its inputs.

Per request (`AdaptiveModel.predict`):

1. read the device state (a `StateProvider`; with a server, its link fields come from the `NetworkEstimator`
   that measures the real offload requests, the other fields from the provider);
2. ask the policy for a decision under ``deadline_ms``;
3. run it: a cached session of the chosen variant, or an HTTP request to the server (`OffloadClient`);
4. if the offload fails (refused, reset, timeout, HTTP error) the link is marked down, the policy decides again
   (now without the server) and the request runs locally (the fastest variant should the policy still want the
   server): it is answered, and the record says ``fallback``;
   if a local session raises, the fastest other variant answers;
5. the policy observes the latency of what ran; the `DecisionRecord` goes to ``records`` (bounded) and, when
   ``log_path`` is set, to a JSON-lines file.

Switching costs no reload: every variant's session is created at construction and kept. Sessions are never
replaced while the model is open, so a request in flight on the previous variant completes on it; `predict` is
safe to call from several threads (the policy is guarded by a lock, the sessions are thread-safe).

Offload link estimate: one request cannot separate round trip from transfer, so the client attributes the
whole network time (wall time minus the server's compute time) to transfer: bandwidth = 8 S / (1e3 t_net) with
RTT 0, which makes the policy's model RTT + 8 S / (1e3 B) equal the measured network time for the same payload
S. When the link is marked down, a background probe (one zero input) re-tests it at most every
``probe_interval_s`` seconds.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

from .bundle import Bundle
from .client import OffloadClient, OffloadError
from .network import NetworkEstimator, OffloadTarget
from .policies import AGENT_POLICY, Policy, create_policy
from .providers.combined import CombinedProvider
from .sessions import ModelSession, open_session, run_images
from .state import DeviceState, StateProvider
from .variants import Variant, validate_bundle

__all__ = ["AdaptiveModel", "DecisionRecord", "Prediction"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionRecord:
    """One answered request: the inputs of the decision, the decision, and what happened.

    ``option`` is what the policy chose; ``ran`` what actually answered (they differ after a fallback, and then
    ``fallback`` says why). ``latency_ms`` is the end-to-end time of `predict` (state read, decision, resize,
    inference or HTTP round trip, fallback); ``missed`` compares it with ``deadline_ms``. ``accuracy`` is that of
    what ran.
    """

    request_id: int
    time_s: float
    deadline_ms: float
    state: DeviceState
    option: str
    offload: bool
    expected_latency_ms: float
    reason: str
    ran: str
    accuracy: float
    latency_ms: float
    missed: bool
    fallback: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "state"}
        d["state"] = self.state.to_json()
        for k in ("expected_latency_ms", "latency_ms"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclass(frozen=True)
class Prediction:
    output: np.ndarray
    record: DecisionRecord


class AdaptiveModel:
    """Runs each request on the variant (or server) the policy picks; see the module docstring.

    Args:
        variants: the family (each with ``model_path``) or a loaded `Bundle` (its default table's latencies).
        deadline_ms: per-request deadline.
        policy: a registry name (built here with the offload target) or a ready `Policy` over the same variants.
        provider: device state source (default: `device_agents.providers.live_provider`, psutil + sysfs re-read at most
            every 0.1 s); closed by `close`.
        offload: a client of the model server; None = on-device only.
        offload_accuracy: accuracy of the server's model; default: what its /health reports.
        threads: intra-op threads of each session.
        fmt: which bundle file to load ("onnx" or "tflite") when ``variants`` is a `Bundle`.
        log_path: append one JSON line per request here.
        log_capacity: how many records `records` keeps (oldest dropped).
        probe_interval_s: minimum spacing of background probes of a link marked down.
        session_wrapper: applied to every opened session (e.g. the live run's clock-throttling emulation).
        probe_batch: images per link probe (the size of a request, so the measured offload cost is a request's).

    A request may hold several images (N > 1) for models exported at batch 1: they run one after the other
    (`device_agents.sessions.run_images`).
    """

    def __init__(
        self,
        variants: Sequence[Variant] | Bundle,
        *,
        deadline_ms: float,
        policy: str | Policy = AGENT_POLICY,
        provider: StateProvider | None = None,
        offload: OffloadClient | None = None,
        offload_accuracy: float | None = None,
        threads: int = 1,
        fmt: str = "onnx",
        policy_kwargs: Mapping[str, Any] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        log_capacity: int = 10_000,
        probe_interval_s: float = 5.0,
        session_wrapper: Callable[[ModelSession], Any] | None = None,
        probe_batch: int = 1,
    ) -> None:
        if not (deadline_ms > 0 and math.isfinite(deadline_ms)):
            raise ValueError(f"AdaptiveModel: deadline_ms must be a finite number > 0, got {deadline_ms}")
        vs = variants.variants(fmt=fmt) if isinstance(variants, Bundle) else validate_bundle(variants)
        missing = [v.name for v in vs if not v.model_path]
        if missing:
            raise ValueError(f"AdaptiveModel: variant(s) {missing} have no model_path")
        self.variants = vs
        self.deadline_ms = float(deadline_ms)
        self._by_name = {v.name: v for v in vs}
        # Every session up front: a switch is a dict lookup, never a load.
        wrap = session_wrapper or (lambda sess: sess)
        self._sessions: dict[str, ModelSession] = {v.name: wrap(open_session(v.model_path or "", threads=threads))
                                                   for v in vs}
        self._fastest = sorted(vs, key=lambda v: v.predicted_latency_ms)
        self._probe_shape = max((s.input_shape for s in self._sessions.values()),
                                key=lambda s: int(np.prod([max(d, 1) for d in s])))
        if len(self._probe_shape) == 4:  # probes look like a request: probe_batch images
            self._probe_shape = (max(1, int(probe_batch)), *self._probe_shape[1:])

        self._device = provider if provider is not None else _default_provider()
        self.network = NetworkEstimator(stale_after_s=math.inf)
        self._client = offload
        self._target: OffloadTarget | None = None
        self._probe_lock = threading.Lock()
        self._probe_thread: threading.Thread | None = None
        self._last_probe_s = -math.inf
        self._probe_interval_s = float(probe_interval_s)
        if offload is not None:
            acc = offload_accuracy if offload_accuracy is not None else offload.accuracy
            if acc is None:
                acc = offload.health().get("accuracy")  # raises OffloadError when the server is not there
            if acc is None:
                raise ValueError("AdaptiveModel: the server reports no accuracy; pass offload_accuracy")
            reply = self._probe()
            self._target = OffloadTarget(
                accuracy=float(acc), server_latency_ms=reply.server_ms if reply else 0.0,
                payload_bytes=reply.n_bytes if reply else int(np.prod(self._probe_shape)) * 4,
            )
        self._state_provider: StateProvider = (
            CombinedProvider([self.network, self._device]) if offload is not None else self._device
        )
        if isinstance(policy, str):
            self.policy = create_policy(policy, vs, offload=self._target, **dict(policy_kwargs or {}))
        else:
            if policy_kwargs:
                raise ValueError("AdaptiveModel: policy_kwargs only apply when the policy is given by name")
            self.policy = policy
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self.records: collections.deque[DecisionRecord] = collections.deque(maxlen=log_capacity)
        self._log: IO[str] | None = None
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._n = 0
        self._t0 = time.monotonic()
        self._closed = False

    @property
    def started_monotonic_s(self) -> float:
        """`time.monotonic` at construction: the origin of every record's ``time_s``."""
        return self._t0

    # ------------------------------------------------------------------ offload link
    @property
    def offload_target(self) -> OffloadTarget | None:
        return self._target

    def _probe(self) -> Any:
        """One zero input to the server; updates the link estimate. Returns the reply or None."""
        assert self._client is not None
        self._last_probe_s = time.monotonic()
        try:
            reply = self._client.infer(np.zeros(self._probe_shape, dtype=np.float32))
        except OffloadError as e:
            logger.info("offload probe failed: %s", e)
            self.network.record_failure()
            return None
        self._record_link(reply.wall_ms, reply.server_ms, reply.n_bytes)
        return reply

    def _record_link(self, wall_ms: float, server_ms: float, n_bytes: int) -> None:
        net_ms = max(wall_ms - server_ms, 1e-3)
        self.network.record_sample(bandwidth_mbps=8.0 * n_bytes / (1e3 * net_ms), rtt_ms=0.0)

    def _maybe_reprobe(self) -> None:
        if self._client is None or (self.network.bandwidth_mbps or 0.0) > 0:
            return
        if time.monotonic() - self._last_probe_s < self._probe_interval_s:
            return
        with self._probe_lock:
            if self._probe_thread is not None and self._probe_thread.is_alive():
                return
            self._last_probe_s = time.monotonic()
            self._probe_thread = threading.Thread(target=self._probe, name="offload-probe", daemon=True)
            self._probe_thread.start()

    # ------------------------------------------------------------------ inference
    def _run_local(self, name: str, x: np.ndarray) -> tuple[np.ndarray, float]:
        sess = self._sessions[name]
        t0 = time.perf_counter()
        y = run_images(sess, x)
        return y, (time.perf_counter() - t0) * 1e3

    def _local_with_fallback(self, name: str, x: np.ndarray) -> tuple[np.ndarray, float, str, str | None]:
        try:
            y, ms = self._run_local(name, x)
            return y, ms, name, None
        except Exception as e:
            for v in self._fastest:
                if v.name != name:
                    logger.warning("variant %s failed (%s); answering with %s", name, e, v.name)
                    y, ms = self._run_local(v.name, x)
                    return y, ms, v.name, f"local variant {name} failed ({type(e).__name__}: {e}); ran {v.name}"
            raise

    def predict(self, x: np.ndarray) -> Prediction:
        """Answer one request (an (N, C, H, W) float array, resized to the chosen variant's resolution)."""
        if self._closed:
            raise RuntimeError("AdaptiveModel.predict after close()")
        if x.ndim != 4:
            raise ValueError(f"AdaptiveModel.predict: expected an (N, C, H, W) array, got shape {x.shape}")
        t0 = time.perf_counter()
        self._maybe_reprobe()
        with self._lock:
            self._n += 1
            rid = self._n
            state = self._state_provider.read()
            d = self.policy.decide(state, deadline_ms=self.deadline_ms)
        fallback: str | None = None
        if d.offload:
            assert self._client is not None
            try:
                reply = self._client.infer(x)
                self._record_link(reply.wall_ms, reply.server_ms, reply.n_bytes)
                with self._lock:
                    self.policy.observe(d, reply.wall_ms)
                y, ran, acc = reply.output, d.option, d.accuracy
            except OffloadError as e:
                self.network.record_failure()
                with self._lock:
                    self.policy.observe(d, math.inf)
                    d_local = self.policy.decide(self._state_provider.read(), deadline_ms=self.deadline_ms)
                name = d_local.variant.name if d_local.variant is not None else self._fastest[0].name
                y, ms, ran, local_fb = self._local_with_fallback(name, x)
                if d_local.variant is not None and ran == name:
                    with self._lock:
                        self.policy.observe(d_local, ms)
                fallback = f"offload failed ({e}); ran {ran} locally" + (f"; {local_fb}" if local_fb else "")
                acc = self._by_name[ran].accuracy
        else:
            assert d.variant is not None
            y, ms, ran, fallback = self._local_with_fallback(d.variant.name, x)
            if fallback is None:
                with self._lock:
                    self.policy.observe(d, ms)
            acc = self._by_name[ran].accuracy
        latency_ms = (time.perf_counter() - t0) * 1e3
        rec = DecisionRecord(
            request_id=rid, time_s=time.monotonic() - self._t0, deadline_ms=self.deadline_ms, state=state,
            option=d.option, offload=d.offload, expected_latency_ms=d.expected_latency_ms, reason=d.reason, ran=ran,
            accuracy=acc, latency_ms=latency_ms, missed=not latency_ms <= self.deadline_ms, fallback=fallback,
        )
        self._log_record(rec)
        return Prediction(output=y, record=rec)

    def _log_record(self, rec: DecisionRecord) -> None:
        if rec.fallback:
            logger.warning("request %d: %s", rec.request_id, rec.fallback)
        logger.debug("request %d: %s -> %s in %.2f ms (%s)", rec.request_id, rec.option, rec.ran, rec.latency_ms,
                     rec.reason)
        with self._log_lock:
            self.records.append(rec)
            if self._log is not None:
                self._log.write(json.dumps(rec.to_json()) + "\n")
                self._log.flush()

    def close(self) -> None:
        """Close the log file, the state provider and the client; wait (bounded) for a running probe."""
        if self._closed:
            return
        self._closed = True
        t = self._probe_thread
        if t is not None:
            t.join(timeout=(self._client.timeout_s * 4 if self._client else 1.0))
        if self._log is not None:
            self._log.close()
        self._state_provider.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _default_provider() -> StateProvider:
    from .providers import live_provider

    return live_provider()
