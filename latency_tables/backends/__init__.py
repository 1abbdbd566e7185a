"""Inference backends behind one protocol, found through a lazy registry.

A backend turns a torch module into something it can run (`export`, in the coordinating process), loads it
(`load`, in the measuring process) and times consecutive inferences (`time_runs`). Heavy runtime imports
(onnxruntime, the LiteRT interpreter) happen only inside the backend modules, on first use.

The measurement *protocol* (rounds, reference probe, estimators, processes) is not a backend's business: it lives
in `latency_tables.protocol` and is the same for every backend.

Precision is a property of a backend instance: a backend created with ``precision="int8"`` exports (quantizes) and
runs int8 models, so a table built with it is measured on int8 layers, never derived from fp32 ones. Each backend
class lists what it runs in ``precisions``; `supported_precisions` reads that list without creating a backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from supernet.errors import InputError
from supernet.registry import Registry, UnknownNameError
from supernet.space import PRECISIONS

__all__ = [
    "BACKENDS",
    "KNOWN_PRECISIONS",
    "Backend",
    "Measurement",
    "Prepared",
    "UnknownBackendError",
    "UnsupportedPrecisionError",
    "backend_spec",
    "base_environment",
    "check_precision",
    "create_backend",
    "list_backends",
    "supported_precisions",
]

# Every precision name any backend may accept: the vocabulary of tables, predictors and the search
# (`supernet.space.PRECISIONS`; ``supernet.quantize`` lowers models to these).
KNOWN_PRECISIONS: tuple[str, ...] = PRECISIONS

class UnknownBackendError(UnknownNameError):
    """A backend name that is not registered; the message lists the known ones."""


# name -> "module:Class", imported on first use (heavy runtimes load only when asked for)
BACKENDS: Registry[type[Backend]] = Registry("backend", error=UnknownBackendError)
BACKENDS.add("onnxruntime", "latency_tables.backends.ort:OrtBackend")
BACKENDS.add("tflite", "latency_tables.backends.tflite:TFLiteBackend")
BACKENDS.add("tflite-builtin", "latency_tables.backends.tflite:TFLiteBuiltinBackend")
BACKENDS.add("pytorch", "latency_tables.backends.torch_eager:TorchEagerBackend")
BACKENDS.add("fake", "latency_tables.backends.fake:FakeBackend")


class UnsupportedPrecisionError(InputError):
    """A backend asked for a precision it does not run; the message lists the ones it does."""


def check_precision(backend: str, precision: str, supported: tuple[str, ...], *, why: str = "") -> str:
    """Return ``precision`` if ``supported`` has it, else raise `UnsupportedPrecisionError` naming the backend,
    the supported precisions and (``why``) the reason the others are missing."""
    if precision not in supported:
        reason = f" ({why})" if why else ""
        raise UnsupportedPrecisionError(
            f"{backend} backend: precision {precision!r} is not supported{reason}; supported: {list(supported)}"
        )
    return precision


@dataclass
class Prepared:
    """A model loaded by a backend, ready for `Backend.time_runs`. Owned by the process that loaded it.

    ``handle`` is backend-specific (an ONNX Runtime session, an interpreter, a module); ``feeds`` the input.
    """

    key: str
    input_shape: tuple[int, ...]
    handle: Any
    feeds: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What every backend provides. Call order: ``export`` (once per model, any process) -> ``load`` (in the
    process that measures) -> ``time_runs`` (any number of times) -> drop the `Prepared`.

    Attributes:
        name: registry name.
        version: version of the runtime library (e.g. onnxruntime's ``__version__``).
        precision: numeric precision of the executed (exported) model, one of the class's ``precisions``.
        precisions: every precision this backend class runs (class attribute; see `supported_precisions`).
        threads: intra-op threads the runtime may use.
        artifact_suffix: file suffix of exported models (".onnx"); ``None`` when the backend runs the torch
            module itself and `export` is not needed (then `load` takes the module).
    """

    name: str
    version: str
    precision: str
    precisions: tuple[str, ...]
    threads: int
    artifact_suffix: str | None

    def export(self, model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
        """Write ``model`` (a torch ``nn.Module``) as this backend's artifact at ``path``, lowered to ``precision``
        (quantized for int8); return the path."""
        ...

    def load(self, source: Path | Any, input_shape: tuple[int, ...], *, key: str = "") -> Prepared:
        """Load an artifact (or a module when ``artifact_suffix`` is None) and bind a zero input."""
        ...

    def time_runs(self, prepared: Prepared, runs: int) -> np.ndarray:
        """Run ``runs`` consecutive inferences; return each one's wall time in **seconds** (shape ``(runs,)``)."""
        ...

    def prepare(self, model: Any, input_shape: tuple[int, ...], workdir: Path) -> Prepared:
        """Convenience for a single process: `export` into ``workdir`` (if needed) then `load`."""
        ...

    def environment(self) -> dict[str, Any]:
        """Backend facts to store with every measurement (name, version, precision, threads, options)."""
        ...


def list_backends() -> list[str]:
    return sorted(BACKENDS.names())


def backend_spec(name: str) -> str:
    """The ``module:Class`` import string of a registered backend."""
    return str(BACKENDS.spec(name))


def supported_precisions(name: str) -> tuple[str, ...]:
    """The precisions backend ``name`` runs (imports its module, not its runtime)."""
    return tuple(BACKENDS.get(name).precisions)


def create_backend(name: str, **kwargs: Any) -> Backend:
    """Import the backend's module on first use and construct it with keyword arguments.

    Raises `UnknownBackendError` (listing the known names) for an unregistered name, `UnsupportedPrecisionError`
    (a ``ValueError``) for a precision the backend does not run, and ``ImportError`` with an install hint when the
    backend's runtime is missing.
    """
    return BACKENDS.get(name)(**kwargs)


def base_environment(backend: Backend, **extra: Any) -> dict[str, Any]:
    """The keys every backend's `environment` reports (name, version, precision, threads) plus its own."""
    return {
        "backend": backend.name,
        "backend_version": backend.version,
        "precision": backend.precision,
        "threads": backend.threads,
        **extra,
    }


@dataclass(frozen=True)
class Measurement:
    """The measured latency of one model under the protocol of `latency_tables.protocol`.

    Attributes:
        key: what was measured (a `LayerSpec.key` or an architecture string).
        latency_ms: the protocol's estimate, in ms: ``ratio * reference_ms``. The number tables and reports use;
            which statistic it is says ``statistic`` (default the median per inference).
        ratio: that statistic of all round-corrected timed runs, divided by the reference probe's (dimensionless).
        reference_ms: the reference probe's latency used to turn ``ratio`` into ms.
        latencies_ms: raw (un-normalised) round medians, ms, one per (process, round).
        p50_ms: median of ``latencies_ms``. iqr_ms: their inter-quartile range (spread).
        per_process_ms: the estimate from each measuring process alone (test-retest material).
        runs: timed inferences in total; rounds: rounds per process; processes: measuring processes.
        warmups: untimed runs per model and round (plus the initial warm-up on load).
        environment: device, CPU model, backend and version, precision, threads (shared, not compared).
        statistic: what ``latency_ms`` is (`latency_tables.protocol.STATISTICS`).
        stats_ms: every statistic measured (median, best, p90, p99), ms, on ``latency_ms``'s scale.
    """

    key: str
    latency_ms: float
    ratio: float
    reference_ms: float
    latencies_ms: tuple[float, ...]
    p50_ms: float
    iqr_ms: float
    per_process_ms: tuple[float, ...]
    runs: int
    rounds: int
    processes: int
    warmups: int
    environment: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    statistic: str = "median"
    stats_ms: Mapping[str, float] = field(default_factory=dict)

    def stat(self, name: str) -> float:
        """The latency in ms as statistic ``name`` (`latency_tables.protocol.STATISTICS`), on ``latency_ms``'s scale."""
        if name == self.statistic:
            return self.latency_ms
        if name not in self.stats_ms:
            raise ValueError(f"measurement of {self.key}: statistic {name!r} was not measured; it has "
                             f"{sorted({self.statistic, *self.stats_ms})}")
        return float(self.stats_ms[name])
