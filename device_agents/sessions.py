"""Inference sessions over exported model files (ONNX via onnxruntime, TFLite via ai_edge_litert) and the input
resizing every variant needs (variants of one search may differ in resolution).

Heavy imports (onnxruntime, ai_edge_litert) happen inside `open_session` only.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

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


class ModelSession(ABC):
    """A loaded model. `run` is safe to call from several threads at once (TFLite serialises internally)."""

    path: str
    format: str
    input_shape: tuple[int, ...]

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for ``x``, already resized to `input_shape` (float32, batch as the model expects)."""


class _OrtSession(ModelSession):
    format = "onnx"

    def __init__(self, path: str, *, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path = path
        self._sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        inp = self._sess.get_inputs()[0]
        self._input = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._sess.run(None, {self._input: x})[0])


class _TfliteSession(ModelSession):
    format = "tflite"

    def __init__(self, path: str, *, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self._interp: Any = Interpreter(model_path=path, num_threads=threads)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self._lock = threading.Lock()  # an interpreter holds its tensors: one invocation at a time

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self._interp.set_tensor(self._in["index"], x.astype(self._in["dtype"]))
            self._interp.invoke()
            return np.array(self._interp.get_tensor(self._out["index"]))


def run_images(session: ModelSession, x: np.ndarray) -> np.ndarray:
    """``session.run`` on an (N, C, H, W) input of any N: a model exported with a fixed batch b (e.g. 1) runs
    the N images in chunks of b, one after the other, and the logits are concatenated (N must be a multiple of
    b). The input is resized to the model's H, W first."""
    x = resize_nchw(x, session.input_shape)
    b = session.input_shape[0] if session.input_shape else -1
    if b <= 0 or x.shape[0] == b:
        return session.run(x)
    if x.shape[0] % b:
        raise ValueError(f"model {session.path}: batch {x.shape[0]} is not a multiple of its fixed batch {b}")
    return np.concatenate([session.run(x[i : i + b]) for i in range(0, x.shape[0], b)])


def open_session(path: str | os.PathLike[str], *, threads: int = 1) -> ModelSession:
    """Load an .onnx (onnxruntime, CPU) or .tflite (ai_edge_litert) file with ``threads`` intra-op threads."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"model file {p!r} does not exist")
    suffix = os.path.splitext(p)[1].lower()
    if suffix == ".onnx":
        return _OrtSession(p, threads=threads)
    if suffix == ".tflite":
        return _TfliteSession(p, threads=threads)
    raise ValueError(f"model file {p!r}: unknown format {suffix!r}; expected .onnx or .tflite")
