"""One place that opens, runs and times exported model files, per runtime backend.

Export checks, quantization, latency tables and the device agent all load models through `open_session`, so a
model is run with the same options wherever it is run, and a new runtime is one `Session` subclass.

Backends (`list_backends`):

* ``onnxruntime``: an ``.onnx`` file on onnxruntime's ``CPUExecutionProvider``.
* ``tflite``: a ``.tflite`` file on the LiteRT interpreter with the XNNPACK delegate (what phones run). The
  delegate is the one LiteRT applies by default; the session checks after loading that it took the graph
  (`Session.delegation`) and refuses to call a model without a delegated node "tflite".
* ``tflite-builtin``: the same file on LiteRT's built-in optimized kernels, no delegate
  (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``).

Heavy imports (onnxruntime, ai_edge_litert) happen inside the sessions, on first use.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from supernet.errors import InputError
from supernet.registry import Registry

__all__ = [
    "BACKENDS",
    "FORMATS",
    "BackendInfo",
    "Delegation",
    "RuntimeOptions",
    "Session",
    "TensorSpec",
    "backend_for_path",
    "backend_version",
    "delegation_summary",
    "input_spec",
    "list_backends",
    "open_session",
    "tflite_interpreter",
    "time_interleaved",
    "time_shuffled_runs",
]

# model file suffix -> format name; format -> the backend that runs it by default
FORMATS: Mapping[str, str] = {".onnx": "onnx", ".tflite": "tflite"}
_DEFAULT_BACKEND: Mapping[str, str] = {"onnx": "onnxruntime", "tflite": "tflite"}

_GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
_EXECUTION_MODES = ("sequential", "parallel")
# onnxruntime pool threads after a Run returns: "default" keeps spinning a while (as an application running
# inferences back to back sees them); "stop-after-run" sets session.force_spinning_stop; "off" never spins.
_SPINNING = ("default", "stop-after-run", "off")


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """Every option a session is created with, in one value (recorded with measurements via `to_json`).

    Attributes:
        threads: intra-op threads: onnxruntime's ``intra_op_num_threads``; LiteRT's ``num_threads``, which the
            XNNPACK delegate takes over as its thread-pool size.
        inter_op_threads: onnxruntime ``inter_op_num_threads`` (only used in parallel execution mode).
        graph_optimization: onnxruntime graph optimisation level: disable | basic | extended | all.
        execution_mode: onnxruntime execution mode: sequential | parallel.
        spinning: onnxruntime pool-thread spinning policy: default | stop-after-run | off (see `_SPINNING`).
        log_severity: onnxruntime log severity level (3 = errors only).
    """

    threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    spinning: str = "default"
    log_severity: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 1:
            raise InputError(f"threads: expected an integer >= 1, got {self.threads!r}")
        if not isinstance(self.inter_op_threads, int) or self.inter_op_threads < 1:
            raise InputError(f"inter_op_threads: expected an integer >= 1, got {self.inter_op_threads!r}")
        for name, value, known in (("graph_optimization", self.graph_optimization, _GRAPH_OPTIMIZATIONS),
                                   ("execution_mode", self.execution_mode, _EXECUTION_MODES),
                                   ("spinning", self.spinning, _SPINNING)):
            if value not in known:
                raise InputError(f"{name} {value!r}: expected one of {', '.join(known)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a loaded model.

    ``shape`` has -1 for dimensions the file leaves open. ``scale`` / ``zero_point`` are set for a quantized
    (e.g. full-integer int8 TFLite) tensor: ``real = scale * (q - zero_point)``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None


@dataclass(frozen=True)
class Delegation:
    """Which delegate runs how much of a TFLite graph (read from the interpreter after it applied delegates).

    Attributes:
        delegate: "XNNPACK", or None when no delegate was applied.
        partitions: delegate kernels (graph partitions handed to the delegate).
        delegated_nodes: original graph nodes inside those partitions; total_nodes: nodes in the graph.
        undelegated_ops: op name -> count of nodes left on built-in kernels.
    """

    delegate: str | None
    partitions: int
    delegated_nodes: int
    total_nodes: int
    undelegated_ops: Mapping[str, int] = field(default_factory=dict)

    @property
    def fully_delegated(self) -> bool:
        return self.total_nodes > 0 and self.delegated_nodes == self.total_nodes

    def to_json(self) -> dict[str, Any]:
        return {"delegate": self.delegate, "partitions": self.partitions, "delegated_nodes": self.delegated_nodes,
                "total_nodes": self.total_nodes, "undelegated_ops": dict(self.undelegated_ops)}


def delegation_summary(reports: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """One manifest entry for many models' `Delegation.to_json` reports (None entries skipped; None if none).

    ``fully_delegated_models`` of ``models`` ran entirely inside the delegate; ``undelegated_ops`` sums the
    nodes left on built-in kernels by op name over all models."""
    rs = [r for r in reports if r is not None]
    if not rs:
        return None
    left: dict[str, int] = {}
    for r in rs:
        for op, n in r["undelegated_ops"].items():
            left[op] = left.get(op, 0) + int(n)
    delegates = sorted({str(r["delegate"]) for r in rs})
    return {"delegate": delegates[0] if len(delegates) == 1 else delegates, "models": len(rs),
            "fully_delegated_models": sum(r["total_nodes"] > 0 and r["delegated_nodes"] == r["total_nodes"]
                                          for r in rs),
            "max_partitions": max(int(r["partitions"]) for r in rs),
            "delegated_nodes": sum(int(r["delegated_nodes"]) for r in rs),
            "total_nodes": sum(int(r["total_nodes"]) for r in rs), "undelegated_ops": dict(sorted(left.items()))}


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:  # pragma: no cover - depends on the install
        return "unknown"


class Session(ABC):
    """A model file loaded by one backend. Call order: `open_session` -> any of `run` / `prepare` + `invoke` /
    `time_runs` -> drop it. `run` is safe to call from several threads (TFLite serialises internally).

    Attributes:
        path: the model file. backend: registry name. format: "onnx" | "tflite". options: how it was opened.
        input / output: the first input and output tensor (`TensorSpec`); ``input_shape`` is ``input.shape``.
    """

    backend: str
    format: str
    path: str
    options: RuntimeOptions
    input: TensorSpec
    output: TensorSpec

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input.shape

    @property
    def threads(self) -> int:
        return self.options.threads

    @property
    def version(self) -> str:
        return backend_version(self.backend)

    @abstractmethod
    def prepare(self, x: np.ndarray) -> Any:
        """What `invoke` feeds for a float input ``x`` of the model's input shape (quantized for int8 inputs)."""

    @abstractmethod
    def invoke(self, feed: Any) -> np.ndarray:
        """One inference on a prepared feed; the raw first output (quantized for int8 outputs)."""

    @abstractmethod
    def bind(self, x: np.ndarray | None = None) -> None:
        """Set the input `time_runs` runs on (``None``: zeros of the input shape and dtype)."""

    @abstractmethod
    def time_runs(self, runs: int) -> np.ndarray:
        """Run ``runs`` consecutive inferences on the bound input; each one's wall time in **seconds**.

        Only the runtime call is inside the clock (``perf_counter_ns``): no input copy, no output read."""

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        out = self.output
        if out.scale is None or out.zero_point is None:
            return np.asarray(y, dtype=np.float32)
        return ((np.asarray(y).astype(np.float32) - out.zero_point) * out.scale).astype(np.float32)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as float32, or quantized with the input's scale and zero point for an integer input."""
        x = np.asarray(x, dtype=np.float32)
        spec = self.input
        dtype = np.dtype(spec.dtype)
        if dtype == np.float32:
            return x
        if spec.scale is None or spec.zero_point is None:
            return x.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max).astype(dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float outputs for float inputs (N, ...): batches of the model's batch size, outputs dequantized."""
        x = np.asarray(x)
        b = self.input.shape[0] if self.input.shape and self.input.shape[0] > 0 else x.shape[0]
        if b == x.shape[0]:
            return self.dequantize(self.invoke(self.prepare(x)))
        if x.shape[0] % b:
            raise InputError(f"{self.path}: the model takes batches of {b}; got {x.shape[0]} inputs")
        return np.concatenate([self.dequantize(self.invoke(self.prepare(x[i : i + b])))
                               for i in range(0, x.shape[0], b)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)

    def delegation(self) -> Delegation | None:
        """How much of the graph a delegate runs (TFLite backends); None where the notion does not apply."""
        return None

    _option_names: tuple[str, ...] = ("threads",)  # the `RuntimeOptions` this backend uses

    def environment(self) -> dict[str, Any]:
        """Runtime facts to store beside a measurement: backend, version, the options this backend uses (and the
        delegation for TFLite)."""
        opts = self.options.to_json()
        return {"backend": self.backend, "backend_version": self.version,
                "options": {k: opts[k] for k in self._option_names}}


# --------------------------------------------------------------------------- onnxruntime
class _OrtSession(Session):
    format = "onnx"
    _option_names = tuple(f.name for f in fields(RuntimeOptions))

    def __init__(self, path: str, *, options: RuntimeOptions, backend: str = "onnxruntime") -> None:
        import onnxruntime as ort

        self.backend, self.path, self.options = backend, path, options
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = options.threads
        opts.inter_op_num_threads = options.inter_op_threads
        opts.execution_mode = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
                               "parallel": ort.ExecutionMode.ORT_PARALLEL}[options.execution_mode]
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[options.graph_optimization]
        opts.log_severity_level = options.log_severity
        if options.spinning == "stop-after-run":
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        elif options.spinning == "off":
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own unrelated types for a bad file
            raise InputError(f"model file {path!r} is not a readable ONNX model: {e}") from None
        self.input = self._spec(self._sess.get_inputs()[0])
        self.output = self._spec(self._sess.get_outputs()[0])
        self._feeds: dict[str, np.ndarray] = {}
        self.bind()

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        dtype = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
                 "tensor(uint8)": "uint8", "tensor(int64)": "int64"}.get(arg.type, arg.type)
        return TensorSpec(arg.name, tuple(d if isinstance(d, int) else -1 for d in arg.shape), dtype)

    @property
    def threads(self) -> int:
        """Intra-op threads as the live session reports them."""
        return int(self._sess.get_session_options().intra_op_num_threads)

    @property
    def native(self) -> Any:
        """The onnxruntime ``InferenceSession`` (for inspection; run through this class)."""
        return self._sess

    def prepare(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input.name: self.quantize_input(x)}

    def invoke(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._sess.run(None, feed)[0])

    def bind(self, x: np.ndarray | None = None) -> None:
        if x is None:
            shape = tuple(1 if d < 0 else d for d in self.input.shape)
            x = np.zeros(shape, dtype=np.float32)
        self._feeds = self.prepare(x)

    def time_runs(self, runs: int) -> np.ndarray:
        run, feeds = self._sess.run, self._feeds
        clock = time.perf_counter_ns
        out = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            t0 = clock()
            run(None, feeds)
            out[i] = clock() - t0
        return out * 1e-9

    def environment(self) -> dict[str, Any]:
        o = self.options
        return {**super().environment(), "execution_provider": "CPUExecutionProvider",
                "graph_optimization": f"ORT_ENABLE_{o.graph_optimization.upper()}"
                if o.graph_optimization != "disable" else "ORT_DISABLE_ALL",
                "thread_spinning": {"default": "onnxruntime default (pool threads spin on after a Run)",
                                    "stop-after-run": "session.force_spinning_stop=1",
                                    "off": "allow_spinning=0"}[o.spinning]}


# --------------------------------------------------------------------------- LiteRT
def tflite_interpreter(path: str | os.PathLike[str], *, threads: int | None = None,
                       delegates: bool = True) -> Any:
    """A LiteRT ``Interpreter`` for ``path`` (tensors not yet allocated): the one place one is constructed.

    ``delegates`` True is LiteRT's default CPU path (``OpResolverType.AUTO``: the XNNPACK delegate is applied
    at `allocate_tensors`); False is built-in kernels only. For inspection (signatures, ops, weights) callers
    may use the interpreter directly; to run a model use `open_session`.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    p = _check_file(path)
    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return Interpreter(model_path=p, num_threads=threads, experimental_op_resolver_type=resolver)
    except (ValueError, RuntimeError) as e:
        raise InputError(f"model file {p!r} is not a readable TFLite model: {e}") from None


def _tflite_spec(d: Mapping[str, Any]) -> TensorSpec:
    scale, zero = d.get("quantization", (0.0, 0))
    dtype = np.dtype(d["dtype"]).name
    quantized = dtype != "float32" and float(scale) != 0.0
    return TensorSpec(str(d["name"]), tuple(int(s) for s in d["shape"]), dtype,
                      float(scale) if quantized else None, int(zero) if quantized else None)


def _delegation(interp: Any) -> Delegation:
    """Walk each DELEGATE node back from its outputs to its inputs over the original nodes it replaced."""
    ops = interp._get_ops_details()  # LiteRT's node table: the model's nodes and one DELEGATE node per partition
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    kernels = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {int(t): i for i, o in enumerate(original) for t in o["outputs"]}
    inside: set[int] = set()
    for k in kernels:
        stop = {int(t) for t in k["inputs"]}
        todo = [int(t) for t in k["outputs"]]
        while todo:
            t = todo.pop()
            i = producer.get(t)
            if t in stop or i is None or i in inside:
                continue
            inside.add(i)
            todo.extend(int(u) for u in original[i]["inputs"] if int(u) >= 0)
    left: dict[str, int] = {}
    for i, o in enumerate(original):
        if i not in inside:
            left[o["op_name"]] = left.get(o["op_name"], 0) + 1
    return Delegation("XNNPACK" if kernels else None, len(kernels), len(inside), len(original),
                      dict(sorted(left.items())))


class _TfliteSession(Session):
    format = "tflite"

    def __init__(self, path: str, *, options: RuntimeOptions, backend: str) -> None:
        self.backend, self.path, self.options = backend, path, options
        self._delegates = backend == "tflite"
        self._interp: Any = tflite_interpreter(path, threads=options.threads, delegates=self._delegates)
        try:
            self._interp.allocate_tensors()
        except RuntimeError as e:
            raise InputError(f"model file {path!r}: LiteRT cannot allocate its tensors: {e}") from None
        self._delegation = _delegation(self._interp)
        if self._delegates and self._delegation.partitions == 0:
            raise RuntimeError(
                f"{path}: backend 'tflite' means the XNNPACK delegate, but LiteRT applied no delegate to any of "
                f"the {self._delegation.total_nodes} nodes; use backend 'tflite-builtin' for built-in kernels")
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.input, self.output = _tflite_spec(self._in), _tflite_spec(self._out)
        self._lock = threading.Lock()  # an interpreter holds its tensors: one invocation at a time
        self.bind()

    @property
    def native(self) -> Any:
        """The LiteRT ``Interpreter`` (for inspection; run through this class)."""
        return self._interp

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return self.quantize_input(x)

    def invoke(self, feed: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], feed)
        self._interp.invoke()
        return np.asarray(self._interp.get_tensor(self._out["index"]))

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return super().run(x)

    def bind(self, x: np.ndarray | None = None) -> None:
        feed = (np.zeros(self.input.shape, dtype=np.dtype(self.input.dtype)) if x is None
                else self.prepare(x))
        self._interp.set_tensor(self._in["index"], feed)

    def time_runs(self, runs: int) -> np.ndarray:
        invoke = self._interp.invoke
        clock = time.perf_counter_ns
        out = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            t0 = clock()
            invoke()
            out[i] = clock() - t0
        return out * 1e-9

    def delegation(self) -> Delegation:
        return self._delegation

    def environment(self) -> dict[str, Any]:
        d = self._delegation
        return {**super().environment(), "runtime": "LiteRT Interpreter",
                "op_resolver": "AUTO (default delegates)" if self._delegates
                else "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
                "delegate": "XNNPACK" if self._delegates else "none: built-in kernels",
                "delegation": d.to_json()}


# --------------------------------------------------------------------------- side-by-side timing
def time_shuffled_runs(sessions: Sequence[Session], feeds: Sequence[Any], *, runs: int, warmup: int,
                       seed: int) -> np.ndarray:
    """(len(sessions), runs) times in ns of single inferences: every round runs each session once, on its
    prepared ``feeds[i]``, in a fresh seeded random order; the first ``warmup`` rounds are not kept."""
    times_ns = np.zeros((len(sessions), runs), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for rnd in range(warmup + runs):
        for i in rng.permutation(len(sessions)):
            t0 = time.perf_counter_ns()
            sessions[i].invoke(feeds[i])
            dt = time.perf_counter_ns() - t0
            if rnd >= warmup:
                times_ns[i, rnd - warmup] = dt
    return times_ns


def time_interleaved(sessions: Mapping[str, Session], *, rounds: int, runs: int, warmup: int = 10,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Round medians in **ms** (shape ``(rounds,)``) per session, timed side by side on their bound inputs.

    After ``warmup`` untimed runs each, every round times ``runs`` consecutive inferences of each session in a
    fresh random order, so a drift of the machine hits every session alike and the per-round ratio of two
    sessions cancels it (compare ratios, not absolute times, on a shared machine)."""
    if rounds < 1 or runs < 1 or warmup < 0:
        raise InputError(f"rounds and runs must be >= 1 and warmup >= 0, got {rounds}, {runs}, {warmup}")
    names = list(sessions)
    for name in names:
        if warmup:
            sessions[name].time_runs(warmup)
    out = {name: np.empty(rounds) for name in names}
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        for i in rng.permutation(len(names)):
            out[names[i]][r] = float(np.median(sessions[names[i]].time_runs(runs))) * 1e3
    return out


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BackendInfo:
    """A runtime backend: the model format it runs, its `Session` class, the distribution it reports."""

    format: str
    session: Callable[..., Session]
    distribution: str


BACKENDS: Registry[BackendInfo] = Registry("runtime backend")
BACKENDS.add("onnxruntime", BackendInfo("onnx", _OrtSession, "onnxruntime"))
BACKENDS.add("tflite", BackendInfo("tflite", _TfliteSession, "ai-edge-litert"))
BACKENDS.add("tflite-builtin", BackendInfo("tflite", _TfliteSession, "ai-edge-litert"))


def list_backends() -> list[str]:
    return BACKENDS.names()


def backend_version(name: str) -> str:
    """Version of the runtime library behind backend ``name`` (package metadata; imports nothing heavy)."""
    return _package_version(BACKENDS.get(name).distribution)


def _check_file(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(f"model file {p!r} does not exist or is not a file")
    return p


def backend_for_path(path: str | os.PathLike[str]) -> str:
    """The default backend for a model file, by suffix (.onnx -> onnxruntime, .tflite -> tflite)."""
    p = os.fspath(path)
    suffix = os.path.splitext(p)[1].lower()
    if suffix not in FORMATS:
        raise InputError(f"model file {p!r}: unknown format {suffix!r}; expected one of {', '.join(FORMATS)}")
    return _DEFAULT_BACKEND[FORMATS[suffix]]


def input_spec(path: str | os.PathLike[str]) -> TensorSpec:
    """The first input of a model file, read without preparing the model to run (no tensor allocation, no
    delegate, no graph optimisation). `InputError` naming the file when it is missing or unreadable."""
    p = _check_file(path)
    if FORMATS.get(os.path.splitext(p)[1].lower()) == "tflite":
        return _tflite_spec(tflite_interpreter(p).get_input_details()[0])
    return open_session(p, options=RuntimeOptions(graph_optimization="disable")).input


def open_session(path: str | os.PathLike[str], *, backend: str | None = None, threads: int | None = None,
                 options: RuntimeOptions | None = None) -> Session:
    """Load ``path`` on ``backend`` (default: by suffix) with ``options`` (``threads`` overrides its threads).

    Raises `InputError` naming the file when it is missing, has the wrong suffix for the backend or cannot be
    read, or naming the backend when it is unknown.
    """
    name = backend or backend_for_path(path)
    info = BACKENDS.get(name)
    fmt = info.format
    p = _check_file(path)
    suffix = os.path.splitext(p)[1].lower()
    if FORMATS.get(suffix) != fmt:
        raise InputError(f"model file {p!r}: backend {name!r} runs .{fmt} files, got {suffix or 'no suffix'!r}")
    opts = options or RuntimeOptions()
    if threads is not None:
        opts = replace(opts, threads=threads)
    return info.session(p, options=opts, backend=name)
