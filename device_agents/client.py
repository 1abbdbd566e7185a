"""Client of the offload model server (`device_agents.server`): `OffloadClient`, bounded timeouts, one error type.

See `device_agents.server` for the wire format.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SHAPE_HEADER", "OffloadClient", "OffloadError", "OffloadReply"]

SHAPE_HEADER = "X-Input-Shape"


class OffloadError(RuntimeError):
    """An offload request failed (connection refused/reset, timeout, HTTP error, malformed reply)."""


@dataclass(frozen=True)
class OffloadReply:
    """A served inference. ``wall_ms``: end to end at the client; ``server_ms``: compute on the server;
    ``n_bytes``: request + response body bytes."""

    output: np.ndarray
    wall_ms: float
    server_ms: float
    n_bytes: int


class OffloadClient:
    """Talks to a `create_model_app` server at ``base_url`` with bounded timeouts (seconds).

    ``timeout_s`` bounds each phase (connect, read, write, pool) of a request; a request that is due within a
    deadline should use a timeout near that deadline so a hung server costs at most that before the local fallback.
    Thread-safe (one pooled httpx client).
    """

    def __init__(self, base_url: str, *, timeout_s: float = 0.5, accuracy: float | None = None) -> None:
        import httpx

        if not timeout_s > 0:
            raise ValueError(f"OffloadClient.timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.accuracy = accuracy
        self._httpx = httpx
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout_s))

    def health(self) -> dict[str, Any]:
        try:
            r = self._client.get("/health")
            r.raise_for_status()
            out = r.json()
        except (self._httpx.HTTPError, ValueError) as e:
            raise OffloadError(f"server {self.base_url}: health check failed: {type(e).__name__}: {e}") from None
        if not isinstance(out, dict):
            raise OffloadError(f"server {self.base_url}: /health did not return an object")
        return out

    def infer(self, x: np.ndarray) -> OffloadReply:
        """Send one input (N, C, H, W); `OffloadError` on any failure."""
        arr = np.ascontiguousarray(x, dtype="<f4")
        body = arr.tobytes()
        headers = {"Content-Type": "application/octet-stream", SHAPE_HEADER: ",".join(str(s) for s in arr.shape)}
        t0 = time.perf_counter()
        try:
            r = self._client.post("/v1/infer", content=body, headers=headers)
            wall_ms = (time.perf_counter() - t0) * 1e3
            if r.status_code != 200:
                detail = r.text[:300]
                raise OffloadError(f"server {self.base_url}: HTTP {r.status_code}: {detail}")
            d = r.json()
            out = np.asarray(d["output"], dtype=np.float32).reshape(d["output_shape"])
            server_ms = float(d["server_ms"])
        except self._httpx.HTTPError as e:
            raise OffloadError(f"server {self.base_url}: {type(e).__name__}: {e}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise OffloadError(f"server {self.base_url}: malformed reply: {e}") from None
        if not math.isfinite(server_ms):
            raise OffloadError(f"server {self.base_url}: malformed reply: server_ms {server_ms}")
        return OffloadReply(output=out, wall_ms=wall_ms, server_ms=server_ms, n_bytes=len(body) + len(r.content))

    def close(self) -> None:
        self._client.close()
