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
The server binds to 127.0.0.1 unless told otherwise. The client is `device_agents.client.OffloadClient`
(kept apart so the runtime does not import FastAPI).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request

from .client import SHAPE_HEADER
from .sessions import ModelSession, open_session, run_images

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "create_model_app", "serve_model"]

DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


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
        y = run_images(session, x)  # a batch-1 model runs the N images one after the other
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
