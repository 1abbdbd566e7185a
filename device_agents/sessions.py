"""Inference sessions over exported model files for the agent, and the input resizing every variant needs
(variants of one search may differ in resolution).

Sessions are `supernet.runtime` sessions (the one place a model is opened and run): ``.onnx`` on onnxruntime,
``.tflite`` on LiteRT with XNNPACK, as the latency tables measured them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from supernet.runtime import Session
from supernet.runtime import open_session as _open_runtime_session

__all__ = ["ModelSession", "open_session", "resize_nchw", "run_images"]


def resize_nchw(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear resize of an (N, C, H, W) float array to ``shape``'s H, W (align_corners=False as in training).

    Unlike the training pipeline (`supernet.data`) it does not antialias when shrinking, so a large shrink differs
    slightly from what the model saw in training: feed inputs near the variants' resolutions. C must match;
    -1 in ``shape`` means "any"."""
    if x.ndim != 4:
        raise ValueError(f"input: expected an (N, C, H, W) array, got shape {x.shape}")
    if len(shape) != 4:
        raise ValueError(f"model input shape {shape} is not (N, C, H, W)")
    _, c, h, w = x.shape
    tc, th, tw = shape[1], shape[2], shape[3]
    if tc > 0 and c != tc:
        raise ValueError(f"input has {c} channels, the model expects {tc}")
    x = x.astype(np.float32, copy=False)
    th, tw = (h if th <= 0 else th), (w if tw <= 0 else tw)
    if (h, w) == (th, tw):
        return x

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, wy = axis(h, th)
    x0, x1, wx = axis(w, tw)
    rows = x[:, :, y0, :] * (1 - wy)[None, None, :, None] + x[:, :, y1, :] * wy[None, None, :, None]
    return (rows[:, :, :, x0] * (1 - wx) + rows[:, :, :, x1] * wx).astype(np.float32)


ModelSession = Session  # a loaded model; `run` is safe to call from several threads


def open_session(path: str | os.PathLike[str], *, threads: int = 1) -> Session:
    """Load an .onnx (onnxruntime, CPU) or .tflite (LiteRT, XNNPACK) file with ``threads`` intra-op threads.

    Raises `supernet.errors.InputError` (a ``ValueError``) naming the file when it is missing or unreadable."""
    return _open_runtime_session(path, threads=threads)


def run_images(session: Any, x: np.ndarray) -> np.ndarray:
    """Logits of an (N, C, H, W) request of any N, resized to the model's H, W: a model exported at a fixed batch
    (e.g. 1) runs the N images in batches, one after the other (`supernet.runtime.Session.run`)."""
    return np.asarray(session.run(resize_nchw(x, session.input_shape)))
