"""A content-addressed cache of exported models, shared by table builds, validations, kits and benchmarks.

Converting a model is by far the slowest step for LiteRT (litert-torch: ~1.5 s per one-layer model and ~20 s per
224-px subnet on a 2-core VM, minutes under load), while a model's file is a pure function of

    what is exported   a layer (`supernet.layers.LayerSpec.key`) or a subnet (``str(arch)`` + the backbone JSON)
    how it is lowered  the backend's name and its settings other than threads (precision, quantization)
    by which tools     the versions of the converter packages (torch, onnx, litert-torch, ai-edge-quantizer, ...)

so every one of those goes into a sha256 and the file lives at ``<cache>/<backend>/<h[:2]>/<h><suffix>``. A build,
a validation or a kit asking for the same model again (another table of the same space, a rerun, a kit of the same
layers) reuses the file instead of converting it.

Concurrent writers are safe: every exporter writes to a temporary sibling and renames it into place (atomic on
POSIX), so a reader sees a whole file or none, and two processes converting the same model both produce a valid
file, the last rename winning. Nothing is ever modified in place.

Where: ``HWNAS_MODEL_CACHE`` (read when a cache is opened, never at import), default ``~/.cache/hwnas/models``;
``HWNAS_MODEL_CACHE=off`` disables it (exports then go to each build's own work folder, as before).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "ModelCache", "content_of_layer", "content_of_subnet", "converter_versions", "open_cache"]

CACHE_ENV = "HWNAS_MODEL_CACHE"
CACHE_FORMAT_VERSION = 1  # bump when what a cached file holds changes for the same key (e.g. a new export path)

# packages whose versions change what an export of a backend writes
_CONVERTERS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("torch", "onnx", "onnxruntime"),  # onnxruntime: its quantizer lowers int8 / fp16
    "tflite": ("torch", "litert-torch", "ai-edge-quantizer"),
}


@functools.cache
def _versions(backend: str) -> tuple[tuple[str, str | None], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out: list[tuple[str, str | None]] = []
    for pkg in _CONVERTERS.get(backend, ()):
        try:
            out.append((pkg, version(pkg)))
        except PackageNotFoundError:
            out.append((pkg, None))
    return tuple(out)


def converter_versions(backend: str) -> dict[str, str | None]:
    """Versions of the packages that convert models for ``backend`` (empty for backends without conversion)."""
    return dict(_versions(backend))


def content_of_layer(key: str) -> str:
    """Cache content of a one-layer model: its `LayerSpec.key` fixes the module (weights are seeded)."""
    return f"layer:{key}"


def content_of_subnet(arch: str, backbone_json: Mapping[str, Any]) -> str:
    """Cache content of a whole subnet: the architecture string alone does not fix the widths; the backbone does."""
    return f"subnet:{arch}:{json.dumps(dict(backbone_json), sort_keys=True)}"


@dataclass(frozen=True)
class ModelCache:
    """A cache folder; `path` names the file of one exported model (which may not exist yet)."""

    root: Path

    def key(self, content: str, *, backend: str, lowering: Mapping[str, Any]) -> str:
        low = {k: v for k, v in sorted(lowering.items()) if k != "threads"}
        blob = json.dumps({"v": CACHE_FORMAT_VERSION, "content": content, "backend": backend, "lowering": low,
                           "converters": converter_versions(backend)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, content: str, *, backend: str, lowering: Mapping[str, Any], suffix: str) -> Path:
        h = self.key(content, backend=backend, lowering=lowering)
        return self.root / backend / h[:2] / f"{h}{suffix}"

    def link_into(self, cached: Path, target: Path) -> Path:
        """Make ``target`` a copy of ``cached`` (a hard link when both are on one file system), atomically."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            try:
                os.link(cached, tmp)
            except OSError:
                import shutil

                shutil.copyfile(cached, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


def open_cache(root: str | os.PathLike[str] | None = None) -> ModelCache | None:
    """The cache at ``root``, else at ``$HWNAS_MODEL_CACHE``, else ``~/.cache/hwnas/models``; None when the
    variable (or ``root``) is ``off``."""
    value = os.fspath(root) if root is not None else os.environ.get(CACHE_ENV, "")
    if value.strip().lower() in ("off", "0", "none", "false"):
        return None
    path = Path(value).expanduser() if value.strip() else Path.home() / ".cache" / "hwnas" / "models"
    return ModelCache(root=path)
