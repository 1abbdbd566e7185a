"""Export static models to ONNX and TFLite, and check that the exported file computes what torch computes.

Both exporters write atomically (to a temporary sibling, then rename). TFLite conversion needs the optional
``[tflite]`` extra (litert-torch); the interpreter (ai-edge-litert) is a core dependency.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from supernet.errors import InputError
from supernet.runtime import open_session

__all__ = ["EXPORT_FORMATS", "ExportCheck", "check_export", "export", "export_onnx", "export_tflite", "run_onnx",
           "run_tflite"]

log = logging.getLogger(__name__)
ONNX_OPSET = 17


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], *, input_shape: tuple[int, ...], opset: int = ONNX_OPSET
) -> Path:
    """Export ``model`` (eval mode, batch 1 by default) to ONNX with input ``input`` and output ``logits``.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra packages and yields plain
    Conv/HardSwish graphs that every runtime fuses the same way.
    """
    target = Path(path)
    tmp = _tmp_sibling(target)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(input_shape),),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return target


def export_tflite(model: nn.Module, path: str | os.PathLike[str], *, input_shape: tuple[int, ...]) -> Path:
    """Convert ``model`` to an fp32 .tflite flatbuffer with litert-torch (offline, no TensorFlow).

    Input layout stays NCHW as in torch; the converter inserts the transposes.
    """
    try:
        import litert_torch
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            "TFLite export needs the optional extra: pip install 'hwnas[tflite]' (litert-torch)"
        ) from e
    target = Path(path)
    tmp = _tmp_sibling(target)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = litert_torch.convert(model, (torch.zeros(input_shape),))
            edge.export(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return target


def run_onnx(path: str | os.PathLike[str], x: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Outputs of the .onnx file at ``path`` for ``x`` (`supernet.runtime`, backend onnxruntime)."""
    return open_session(path, backend="onnxruntime", threads=threads).run(x)


def run_tflite(path: str | os.PathLike[str], x: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Outputs of the .tflite file at ``path`` for ``x`` (`supernet.runtime`, backend tflite: XNNPACK)."""
    return open_session(path, backend="tflite", threads=threads).run(x)


EXPORT_FORMATS: tuple[str, ...] = ("onnx", "tflite")


def export(model: nn.Module, path: str | os.PathLike[str], *, input_shape: tuple[int, ...],
           format: str | None = None) -> Path:
    """Export ``model`` to ``path`` as ``format`` ("onnx" | "tflite"; default: from the suffix), fp32.

    The one export entry: quantized files are lowered from this fp32 file (`supernet.quantize`)."""
    fmt = format or {".onnx": "onnx", ".tflite": "tflite"}.get(Path(path).suffix.lower())
    if fmt == "onnx":
        return export_onnx(model, path, input_shape=input_shape)
    if fmt == "tflite":
        return export_tflite(model, path, input_shape=input_shape)
    raise InputError(f"export format {format or Path(path).suffix!r} for {os.fspath(path)!r}: expected one of "
                     f"{', '.join(EXPORT_FORMATS)}")


@dataclass(frozen=True)
class ExportCheck:
    """How closely an exported file reproduces torch on the same inputs."""

    path: str
    format: str
    max_abs_diff: float
    top1_agreement: float
    ok: bool


def check_export(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    fmt: str,
    inputs: torch.Tensor,
    atol: float = 1e-3,
) -> ExportCheck:
    """Run ``inputs`` (N, C, H, W) one at a time through torch and the exported file and compare logits."""
    backend = {"onnx": "onnxruntime", "tflite": "tflite"}.get(fmt)
    if backend is None:
        raise InputError(f"export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    model.eval()
    with torch.no_grad():
        ref = model(inputs).numpy()
    session = open_session(path, backend=backend)
    got = np.concatenate([session.run(inputs[i : i + 1].numpy()) for i in range(inputs.shape[0])])
    diff = float(np.abs(ref - got).max())
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    return ExportCheck(str(path), fmt, diff, agree, diff <= atol)
