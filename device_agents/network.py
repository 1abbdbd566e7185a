"""Offloading: the server an agent may send a request to (`OffloadTarget`) and the link estimate (`NetworkEstimator`).

Notation: B = bandwidth (Mbit/s), RTT (ms), S = payload (bytes, request + response).
Transfer time: t_xfer_ms = 8 S / (1000 B)   (8 S bits / (B 1e6 bit/s) = 8 S / (1e3 B) ms).
Offload latency: L_off = RTT + t_xfer + L_server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from supernet.errors import InputError

from .state import DeviceState, StateProvider, state_from_partial

__all__ = ["NetworkEstimator", "OffloadTarget", "transfer_ms"]


def transfer_ms(payload_bytes: float, bandwidth_mbps: float) -> float:
    """Time to move ``payload_bytes`` at ``bandwidth_mbps``; inf when there is no bandwidth."""
    if bandwidth_mbps <= 0:
        return math.inf
    return 8.0 * payload_bytes / (1e3 * bandwidth_mbps)


@dataclass(frozen=True)
class OffloadTarget:
    """A server that runs a (usually larger) model on request.

    Attributes:
        accuracy: top-1 accuracy of the server's model, [0, 1].
        server_latency_ms: compute time on the server per request.
        payload_bytes: bytes sent plus received per request (e.g. a compressed 224 px image ~ 20 kB).
        name: label used in decisions and plots.
    """

    accuracy: float = 0.80
    server_latency_ms: float = 8.0
    payload_bytes: int = 20_000
    name: str = "server"

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise InputError(f"--server-accuracy: expected a fraction in [0, 1], got {self.accuracy}")
        if not (self.server_latency_ms >= 0 and math.isfinite(self.server_latency_ms)):
            raise InputError(f"--server-latency-ms: expected a finite number >= 0, got {self.server_latency_ms}")
        if self.payload_bytes < 0:
            raise InputError(f"--payload-bytes: expected >= 0, got {self.payload_bytes}")

    @property
    def option_name(self) -> str:
        return f"offload:{self.name}"

    def network_ms(self, bandwidth_mbps: float, rtt_ms: float) -> float:
        """RTT + transfer time (radio busy); inf when unreachable."""
        return rtt_ms + transfer_ms(self.payload_bytes, bandwidth_mbps)

    def latency_ms(self, bandwidth_mbps: float, rtt_ms: float) -> float:
        """Expected end-to-end latency L_off for the given link; inf when unreachable."""
        return self.network_ms(bandwidth_mbps, rtt_ms) + self.server_latency_ms


class NetworkEstimator(StateProvider):
    """Bandwidth and RTT to the offload server, smoothed from observed transfers; a `StateProvider` for the two
    network fields (all other fields are reported missing, combine it with a device provider).

    Each sample updates an exponential moving average (weight ``alpha`` for the new sample); the first sample is
    taken as is. A failed transfer (`record_failure`) sets the estimate to "no network" at once, because acting on
    a stale good estimate during an outage costs a missed deadline per request; recovery then follows the average.
    Estimates older than ``stale_after_s`` are reported missing (and fall back to no network).
    """

    name = "network"

    def __init__(
        self, *, alpha: float = 0.3, stale_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"NetworkEstimator.alpha must be in (0, 1], got {alpha}")
        self._alpha = alpha
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._t0 = clock()
        self._bw: float | None = None
        self._rtt: float | None = None
        self._last_s: float | None = None
        self._last_read_s = 0.0

    @property
    def bandwidth_mbps(self) -> float | None:
        return self._bw

    @property
    def rtt_ms(self) -> float | None:
        return self._rtt

    def record_sample(self, *, bandwidth_mbps: float, rtt_ms: float) -> None:
        """One direct observation (a probe, or a trace row). ``bandwidth_mbps <= 0`` counts as a failure."""
        if not bandwidth_mbps > 0 or not math.isfinite(rtt_ms):
            self.record_failure()
            return
        a = self._alpha
        self._bw = bandwidth_mbps if self._bw is None or self._bw <= 0 else (1 - a) * self._bw + a * bandwidth_mbps
        self._rtt = rtt_ms if self._rtt is None or not math.isfinite(self._rtt) else (1 - a) * self._rtt + a * rtt_ms
        self._last_s = self._clock()

    def record_transfer(self, *, n_bytes: int, duration_ms: float, rtt_ms: float) -> None:
        """A completed request: ``n_bytes`` moved in ``duration_ms`` wall time, of which ``rtt_ms`` was round trip."""
        xfer_ms = duration_ms - rtt_ms
        if n_bytes <= 0 or xfer_ms <= 0:
            # Too small to measure throughput: keep the bandwidth, learn the RTT.
            if self._bw is not None and self._bw > 0:
                self.record_sample(bandwidth_mbps=self._bw, rtt_ms=rtt_ms)
            return
        self.record_sample(bandwidth_mbps=8.0 * n_bytes / (1e3 * xfer_ms), rtt_ms=rtt_ms)

    def record_failure(self) -> None:
        self._bw, self._rtt = 0.0, math.inf
        self._last_s = self._clock()

    def read(self) -> DeviceState:
        now = max(self._clock() - self._t0, self._last_read_s)
        self._last_read_s = now
        fresh = self._last_s is not None and self._clock() - self._last_s <= self._stale_after_s
        values = {"bandwidth_mbps": self._bw, "rtt_ms": self._rtt} if fresh else {}
        return state_from_partial(now, values)
