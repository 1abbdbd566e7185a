"""Contract of `supernet.runtime`, run against every registered backend on checked-in tiny model files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from runtime_fixture import DATA, INPUT_SHAPE, tiny_model

from supernet.errors import InputError
from supernet.registry import UnknownNameError
from supernet.runtime import (
    BACKENDS,
    RuntimeOptions,
    backend_for_path,
    list_backends,
    open_session,
    time_interleaved,
)

SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}


def _fixture(backend: str) -> Path:
    return DATA / f"runtime_tiny{SUFFIX[BACKENDS.get(backend).format]}"


def _inputs(n: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, *INPUT_SHAPE[1:])).astype(np.float32)


def _torch(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tiny_model()(torch.from_numpy(x)).numpy()


def test_every_backend_is_covered_by_this_suite() -> None:
    assert list_backends() == ["onnxruntime", "tflite", "tflite-builtin"]


@pytest.fixture(params=list_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_run_matches_torch(backend: str) -> None:
    s = open_session(_fixture(backend), backend=backend)
    x = _inputs(3)  # 3 inputs through a batch-1 model: run() splits them
    got, ref = s.run(x), _torch(x)
    assert got.shape == ref.shape == (3, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert s.backend == backend and s.input_shape == INPUT_SHAPE and s.input.dtype == "float32"
    assert not s.input.quantized and s.output.shape == (1, 10)


def test_prepare_invoke_and_timing(backend: str) -> None:
    s = open_session(_fixture(backend), backend=backend)
    x = _inputs(1)
    np.testing.assert_allclose(s.dequantize(s.invoke(s.prepare(x))), s.run(x))
    s.bind(x)
    t = s.time_runs(5)
    assert t.shape == (5,) and (t > 0).all() and (t < 1.0).all()  # seconds, not ns or ms


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_reach_the_runtime(backend: str, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread count reaches the runtime's own constructor, not only our options value."""
    seen: dict[str, Any] = {}
    if backend == "onnxruntime":
        s = open_session(_fixture(backend), backend=backend, threads=threads)
        seen["threads"] = s.native.get_session_options().intra_op_num_threads
        seen["inter"] = s.native.get_session_options().inter_op_num_threads
        assert seen["inter"] == 1
    else:
        import ai_edge_litert.interpreter as litert

        real = litert.Interpreter

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen["threads"] = kwargs.get("num_threads")
            return real(*args, **kwargs)

        monkeypatch.setattr(litert, "Interpreter", spy)
        s = open_session(_fixture(backend), backend=backend, threads=threads)
    assert seen["threads"] == threads == s.threads
    assert s.environment()["options"]["threads"] == threads


def test_missing_file_is_an_input_error_naming_it(backend: str, tmp_path: Path) -> None:
    missing = tmp_path / f"nope{SUFFIX[BACKENDS.get(backend).format]}"
    with pytest.raises(InputError, match="nope"):
        open_session(missing, backend=backend)


def test_unreadable_file_is_an_input_error_naming_it(backend: str, tmp_path: Path) -> None:
    bad = tmp_path / f"garbage{SUFFIX[BACKENDS.get(backend).format]}"
    bad.write_bytes(b"not a model at all" * 10)
    with pytest.raises(InputError, match="garbage.*not a readable"):
        open_session(bad, backend=backend)


def test_wrong_suffix_for_backend_is_refused(backend: str, tmp_path: Path) -> None:
    other = DATA / ("runtime_tiny.tflite" if BACKENDS.get(backend).format == "onnx" else "runtime_tiny.onnx")
    with pytest.raises(InputError, match=f"backend '{backend}' runs"):
        open_session(other, backend=backend)


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError,
                       match="runtime backend .tensorrt.; known runtime backends: onnxruntime, tflite, tflite-builtin"):
        open_session(DATA / "runtime_tiny.onnx", backend="tensorrt")


def test_default_backend_by_suffix(tmp_path: Path) -> None:
    assert backend_for_path("a/b.onnx") == "onnxruntime"
    assert backend_for_path("a/b.TFLITE") == "tflite"
    with pytest.raises(InputError, match="b.pt"):
        backend_for_path("a/b.pt")


def test_bad_options_name_the_option() -> None:
    with pytest.raises(InputError, match="threads"):
        RuntimeOptions(threads=0)
    with pytest.raises(InputError, match="spinning 'sometimes'"):
        RuntimeOptions(spinning="sometimes")


def test_onnxruntime_options_reach_the_session() -> None:
    """The one set of session options: what the latency tables and every other caller get by default."""
    s = open_session(DATA / "runtime_tiny.onnx")
    so = s.native.get_session_options()
    import onnxruntime as ort

    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    with pytest.raises(RuntimeError):  # default spinning: no spinning entry set at all
        so.get_session_config_entry("session.force_spinning_stop")
    s2 = open_session(DATA / "runtime_tiny.onnx", options=RuntimeOptions(spinning="stop-after-run",
                                                                         graph_optimization="basic"))
    so2 = s2.native.get_session_options()
    assert so2.get_session_config_entry("session.force_spinning_stop") == "1"
    assert so2.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


# ----------------------------------------------------------------------------- XNNPACK vs built-in kernels
def _delegate_nodes(session: Any) -> int:
    """DELEGATE nodes in the interpreter's own node table (independent of `Session.delegation`)."""
    return sum(o["op_name"] == "DELEGATE" for o in session.native._get_ops_details())


def test_tflite_means_xnnpack_and_tflite_builtin_means_no_delegate() -> None:
    xnn = open_session(DATA / "runtime_tiny.tflite", backend="tflite")
    builtin = open_session(DATA / "runtime_tiny.tflite", backend="tflite-builtin")
    assert _delegate_nodes(xnn) >= 1 and _delegate_nodes(builtin) == 0  # the two paths are not the same
    d = xnn.delegation()
    assert d.delegate == "XNNPACK" and d.fully_delegated and d.partitions == 1, d
    b = builtin.delegation()
    assert b.delegate is None and b.delegated_nodes == 0 and b.total_nodes == d.total_nodes
    assert sum(b.undelegated_ops.values()) == b.total_nodes and "CONV_2D" in b.undelegated_ops
    assert xnn.environment()["delegation"]["delegated_nodes"] == d.total_nodes
    assert builtin.environment()["delegation"]["delegated_nodes"] == 0


def test_tflite_refuses_a_run_without_the_delegate(monkeypatch: pytest.MonkeyPatch) -> None:
    """If LiteRT stopped applying XNNPACK by default, "tflite" must fail loudly, not time built-in kernels."""
    import supernet.runtime as rt

    real = rt.tflite_interpreter
    monkeypatch.setattr(rt, "tflite_interpreter", lambda p, *, threads=None, delegates=True:
                        real(p, threads=threads, delegates=False))
    with pytest.raises(RuntimeError, match="no delegate"):
        open_session(DATA / "runtime_tiny.tflite", backend="tflite")


def test_int8_tflite_input_is_quantized_with_the_files_scale() -> None:
    path = DATA / "runtime_tiny_int8.tflite"
    for backend in ("tflite", "tflite-builtin"):
        s = open_session(path, backend=backend)
        assert s.input.dtype == "int8" and s.input.quantized and s.input.scale and s.input.scale > 0
        assert s.output.dtype == "int8" and s.output.quantized
        x = _inputs(4)
        feed = s.prepare(x[:1])
        assert feed.dtype == np.int8
        np.testing.assert_array_equal(
            feed, np.clip(np.round(x[:1] / s.input.scale) + s.input.zero_point, -128, 127).astype(np.int8))
        got, ref = s.run(x), _torch(x)
        assert got.dtype == np.float32
        assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()  # int8 of a tiny net: close, not equal
    # the int8 graph is split into XNNPACK partitions and nodes left to built-in kernels: reported, not hidden
    d = open_session(path, backend="tflite").delegation()
    assert d.delegate == "XNNPACK" and d.delegated_nodes + sum(d.undelegated_ops.values()) == d.total_nodes


def test_copy_of_a_model_loads_anywhere(tmp_path: Path) -> None:
    p = shutil.copy(DATA / "runtime_tiny.onnx", tmp_path / "m.onnx")
    assert open_session(p).path == str(p)


def test_time_interleaved_gives_round_medians_in_ms_per_session() -> None:
    sessions = {b: open_session(_fixture(b), backend=b) for b in list_backends()}
    out = time_interleaved(sessions, rounds=3, runs=2, warmup=1)
    assert set(out) == set(sessions) and all(v.shape == (3,) and (v > 0).all() and (v < 1000).all()
                                             for v in out.values())
    with pytest.raises(InputError, match="rounds"):
        time_interleaved(sessions, rounds=0, runs=1)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
@pytest.mark.parametrize("threads", [1, 3])
def test_xnnpack_runs_on_the_requested_threads(threads: int) -> None:
    """XNNPACK's thread pool (threads - 1 workers beside the caller) is what `threads` sets, not just a number
    handed to the interpreter."""
    import os

    def n_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = n_threads()
    s = open_session(DATA / "runtime_tiny.tflite", backend="tflite", threads=threads)
    s.run(_inputs(1))
    assert n_threads() - before == threads - 1
