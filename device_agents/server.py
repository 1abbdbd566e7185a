"""The offload server (``hwnas serve-model``) and its client: one model behind FastAPI + uvicorn.

Wire format (chosen so the server can bound and validate a request before decoding it):

    GET  /health     -> {"status": "ok", "model", "format", "input_shape", "accuracy", "max_payload_bytes", ...}
    POST /v1/infer   body: the input as raw little-endian float32 bytes, C order;
                     headers: Content-Type: application/octet-stream, X-Input-Shape: "N,C,H,W"
                     -> {"output": [...] (flat), "output_shape": [...], "server_ms": compute time, "model": name}

Validation: 415 for another content type; 413 when the body exceeds ``max_payload_bytes`` (checked on
Content-Length and again while reading, so a lying client cannot exceed it); 422 when the shape header is
malformed, N is not in 1..``max_batch``, C differs from the model's, H or W is outside 1..``max_side``, the body
length is not N*C*H*W*4 bytes, or a value is not finite. The input is resized to the model's resolution.
The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sessions import ModelSession, open_session, resize_nchw

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "OffloadClient",
    "OffloadError",
    "OffloadReply",
    "create_model_app",
    "serve_model",
]

DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
SHAPE_HEADER = "X-Input-Shape"


def create_model_app(
    model_path: str | os.PathLike[str],
    *,
    name: str | None = None,
    accuracy: float | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_batch: int = 8,
    max_side: int = 1024,
    threads: int = 1,
) -> Any:
    """A FastAPI app serving ``model_path`` (ONNX or TFLite) on ``/v1/infer``; see the module docstring."""
    from fastapi import FastAPI, HTTPException, Request

    if max_payload_bytes <= 0 or max_batch <= 0 or max_side <= 0:
        raise ValueError("create_model_app: max_payload_bytes, max_batch and max_side must be > 0")
    session: ModelSession = open_session(model_path, threads=threads)
    label = name or os.path.basename(os.fspath(model_path))
    model_c = session.input_shape[1] if len(session.input_shape) == 4 else -1
    app = FastAPI(title="hwnas model server", version="1")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": label, "format": session.format, "input_shape": list(session.input_shape),
                "accuracy": accuracy, "max_payload_bytes": max_payload_bytes, "max_batch": max_batch,
                "max_side": max_side}

    @app.post("/v1/infer")
    async def infer(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/octet-stream":
            raise HTTPException(415, detail=f"Content-Type must be application/octet-stream (float32 bytes), got {ctype!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_payload_bytes:
            raise HTTPException(413, detail=f"payload of {declared} bytes exceeds the limit of {max_payload_bytes}")
        shape_text = request.headers.get(SHAPE_HEADER, "")
        try:
            shape = tuple(int(s) for s in shape_text.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 4:
            raise HTTPException(422, detail=f"header {SHAPE_HEADER} must be 'N,C,H,W' integers, got {shape_text!r}")
        n, c, h, w = shape
        if not 1 <= n <= max_batch:
            raise HTTPException(422, detail=f"batch N={n} is outside 1..{max_batch}")
        if model_c > 0 and c != model_c:
            raise HTTPException(422, detail=f"input has C={c} channels, the model expects {model_c}")
        if not (1 <= h <= max_side and 1 <= w <= max_side):
            raise HTTPException(422, detail=f"input side {h}x{w} is outside 1..{max_side}")
        expected = n * c * h * w * 4
        if expected > max_payload_bytes:
            raise HTTPException(413, detail=f"shape {shape} needs {expected} bytes, over the limit of {max_payload_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_payload_bytes:
                raise HTTPException(413, detail=f"payload exceeds the limit of {max_payload_bytes} bytes")
        if len(body) != expected:
            raise HTTPException(422, detail=f"body has {len(body)} bytes; shape {shape} as float32 needs {expected}")
        x = np.frombuffer(bytes(body), dtype="<f4").reshape(shape)
        if not np.isfinite(x).all():
            raise HTTPException(422, detail="input holds NaN or infinite values")
        t0 = time.perf_counter()
        y = session.run(resize_nchw(x, session.input_shape))
        server_ms = (time.perf_counter() - t0) * 1e3
        return {"output": y.ravel().tolist(), "output_shape": list(y.shape), "server_ms": server_ms, "model": label}

    return app


def serve_model(
    model_path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8770,
    name: str | None = None,
    accuracy: float | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    threads: int = 1,
) -> None:
    """Run the model server with uvicorn until interrupted (localhost only unless ``host`` says otherwise)."""
    import uvicorn

    app = create_model_app(model_path, name=name, accuracy=accuracy, max_payload_bytes=max_payload_bytes,
                           threads=threads)
    uvicorn.run(app, host=host, port=port, log_level="warning")


# --------------------------------------------------------------------------- client
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
