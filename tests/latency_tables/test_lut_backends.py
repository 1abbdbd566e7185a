"""The backend contract (`latency_tables.testing.BackendContract`) over every registered backend (the TFLite one
is slow to convert: marked slow), and what is particular to some backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latency_tables.backends import UnknownBackendError, create_backend, list_backends
from latency_tables.protocol import MeasureItem, MeasurementProtocol, WorkerPool
from latency_tables.testing import LAYER as SPEC
from latency_tables.testing import LAYER_INPUT_SHAPE as SHAPE
from latency_tables.testing import BackendContract
from supernet.layers import LayerSpec, build_layer

SLOW = {"tflite": [pytest.mark.slow, pytest.mark.tflite], "tflite-builtin": [pytest.mark.slow, pytest.mark.tflite]}
TINY_TFLITE = Path(__file__).parents[1] / "supernet" / "data" / "runtime_tiny.tflite"  # checked in, (1, 3, 16, 16)
BACKENDS = [pytest.param(name, marks=SLOW.get(name, [])) for name in list_backends()]


def test_measuring_processes_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, latency_tables.backends, latency_tables.protocol; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(p for p in sys.path if p)}).stdout
    assert out.strip() == "False"


def test_registry_lists_the_four_backends() -> None:
    assert {"onnxruntime", "tflite", "pytorch", "fake"} <= set(list_backends())


def test_unknown_backend_lists_known_ones() -> None:
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'tpu'.*onnxruntime"):
        create_backend("tpu")


@pytest.mark.parametrize("name", BACKENDS)
class TestEveryBackend(BackendContract):
    pass


@pytest.mark.parametrize("name", [n for n in list_backends() if n not in ("fake", "tflite")])
def test_real_backends_refuse_unsupported_precision(name: str) -> None:
    with pytest.raises(ValueError, match=r"precision 'int4' is not supported"):
        create_backend(name, precision="int4")


@pytest.mark.parametrize("name", [pytest.param("pytorch"), pytest.param("onnxruntime")])
def test_backend_runs_in_spawned_measuring_processes(name: str, tmp_path: Path) -> None:
    """The same protocol code drives real backends in separate OS processes (artifact or module factory)."""
    import functools

    be = create_backend(name)
    ref_spec = LayerSpec("mbconv", 8, 16, 16, kernel=5, stride=1, expand=3, mid_ch=48)

    def item(key: str, spec: LayerSpec) -> MeasureItem:
        if be.artifact_suffix is None:
            return MeasureItem(key, SHAPE, factory=functools.partial(build_layer, spec))
        return MeasureItem(key, SHAPE, artifact=str(be.export(build_layer(spec), SHAPE, tmp_path / f"{key}{be.artifact_suffix}")))

    pr = MeasurementProtocol(
        rounds=2, runs_per_round=2, warmups=0, load_warmups=0, processes=2 if name == "onnxruntime" else 1
    )
    with WorkerPool(name, {"threads": 1}, pr) as pool:
        res = pool.measure_chunk([item("a", SPEC)], item("ref", ref_spec))
    assert res.runs_s.shape == (pr.processes, 2, 1, 2) and np.all(res.runs_s > 0)


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_sessions_keep_the_runtime_threading_defaults(threads: int, tmp_path: Path) -> None:
    """Measured sessions use onnxruntime's own spinning behaviour (see the comment in `OrtBackend.load` for the
    alternative that was measured and dropped), and the environment says so."""
    be = create_backend("onnxruntime", threads=threads, precision="fp32")
    prepared = be.prepare(build_layer(SPEC), SHAPE, tmp_path)
    opts = prepared.handle.native.get_session_options()
    assert opts.intra_op_num_threads == threads and opts.inter_op_num_threads == 1
    with pytest.raises(RuntimeError, match="force_spinning_stop"):  # never set: the runtime's default applies
        opts.get_session_config_entry("session.force_spinning_stop")
    assert "default" in be.environment()["thread_spinning"]


@pytest.mark.parametrize("name", ["tflite", "tflite-builtin"])
def test_tflite_delegation_travels_from_the_measuring_process(name: str) -> None:
    """Each measured model's delegation comes back with its timings (and survives the partial file), so a table
    manifest can say what XNNPACK ran: "tflite" fully on XNNPACK, "tflite-builtin" on no delegate."""
    from latency_tables.protocol import ChunkResult
    from supernet.runtime import delegation_summary

    item = MeasureItem("tiny", (1, 3, 16, 16), artifact=str(TINY_TFLITE))
    pr = MeasurementProtocol(rounds=1, runs_per_round=2, warmups=0, load_warmups=0, processes=1)
    with WorkerPool(name, {"threads": 1}, pr) as pool:
        res = pool.measure_chunk([item], item)
    assert res.delegations is not None and len(res.delegations) == 1
    d = res.delegations[0]
    assert d is not None and d["total_nodes"] > 0
    if name == "tflite":
        assert d["delegate"] == "XNNPACK" and d["delegated_nodes"] == d["total_nodes"]
    else:
        assert d["delegate"] is None and d["delegated_nodes"] == 0
    assert ChunkResult.from_json(res.to_json()).delegations == res.delegations
    summary = delegation_summary(res.delegations)
    assert summary is not None and summary["models"] == 1
    assert summary["fully_delegated_models"] == (1 if name == "tflite" else 0)
