"""build_table: resumable after a kill, refuses to mix settings, measures each layer once."""

from __future__ import annotations

from pathlib import Path

import pytest
from lut_helpers import FAKE_PROTOCOL  # type: ignore[import-not-found]

from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import ChunkDone, LatencyTable, LatencyTableError, build_table, enumerate_layers
from supernet.layers import Backbone
from supernet.space import SearchSpace


class Killed(Exception):
    pass


def test_resume_after_kill_measures_only_missing_rows(tmp_path: Path, small_space: SearchSpace, mnist_backbone: Backbone) -> None:
    out = tmp_path / "lut.csv"
    first: list[str] = []

    def kill_after_two_chunks(ev: ChunkDone) -> None:
        first.extend(ev.keys)
        if len(first) >= 2 * FAKE_PROTOCOL.chunk_size:
            raise Killed

    with pytest.raises(Killed):
        build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=FAKE_PROTOCOL, progress=False,
                    on_chunk=kill_after_two_chunks)
    assert not out.exists() and out.with_name("lut.csv.partial.jsonl").exists()

    second: list[str] = []
    table = build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=FAKE_PROTOCOL, progress=False,
                        on_chunk=lambda ev: second.extend(ev.keys))
    all_keys = {s.key for s in enumerate_layers(small_space, mnist_backbone)}
    assert set(first).isdisjoint(second)
    assert set(first) | set(second) == all_keys == set(table.rows)
    assert not out.with_name("lut.csv.partial.jsonl").exists()
    assert set(LatencyTable.load(out).rows) == all_keys


def test_build_seconds_after_a_resume_count_both_parts(tmp_path: Path, small_space: SearchSpace,
                                                      mnist_backbone: Backbone) -> None:
    import time

    out = tmp_path / "lut.csv"
    seen: list[str] = []

    def slow_then_kill(ev: ChunkDone) -> None:  # the killed first part takes >= 1 s
        seen.extend(ev.keys)
        if len(seen) <= FAKE_PROTOCOL.chunk_size:
            time.sleep(1.0)
        else:
            raise Killed

    with pytest.raises(Killed):
        build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=FAKE_PROTOCOL, progress=False,
                    on_chunk=slow_then_kill)
    t0 = time.perf_counter()
    table = build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=FAKE_PROTOCOL, progress=False)
    second = time.perf_counter() - t0
    assert table.meta.build_seconds is not None
    assert table.meta.build_seconds >= 1.0 + 0.5 * second, (table.meta.build_seconds, second)
    assert LatencyTable.load(out).meta.build_seconds == table.meta.build_seconds


def test_resume_with_other_settings_is_refused(tmp_path: Path, small_space: SearchSpace, mnist_backbone: Backbone) -> None:
    out = tmp_path / "lut.csv"

    def kill(ev: ChunkDone) -> None:
        raise Killed

    with pytest.raises(Killed):
        build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=FAKE_PROTOCOL, progress=False, on_chunk=kill)
    other = MeasurementProtocol(**{**FAKE_PROTOCOL.to_json(), "rounds": 4})
    with pytest.raises(LatencyTableError, match=r"different settings.*protocol"):
        build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=other, progress=False)
    table = build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=other, progress=False, resume=False)
    assert table.meta.rounds == 4


def test_fake_table_recovers_the_fake_latency_model(fake_table: LatencyTable) -> None:
    """The fake's drift (±30 %) and noise must not leak into the table: each row is close to its true latency."""
    from latency_tables.backends.fake import FakeBackend, count_macs_of_module
    from supernet.layers import build_layer

    fb = FakeBackend()
    ratios = []
    for row in list(fake_table.rows.values())[:12]:
        s = row.spec
        macs, kernels = count_macs_of_module(build_layer(s), (1, s.in_ch, s.in_hw, s.in_hw))
        ratios.append(row.ratio / fb.true_latency_s(macs, kernels))
    # ratio = latency / probe latency: constant across rows up to noise if the drift was removed
    spread = max(ratios) / min(ratios)
    assert spread < 1.15


def test_real_onnxruntime_build_of_a_tiny_space(tmp_path: Path) -> None:
    """The real path end to end: spawned processes, ONNX export, onnxruntime timing, CSV + manifest on disk."""
    space = SearchSpace(name="tiny", resolutions=(24,), depth_choices=(1,), kernel_choices=(3,), expand_choices=(3, 6))
    bb = Backbone(in_channels=1, num_classes=10, width_mult=0.5)
    pr = MeasurementProtocol(rounds=2, runs_per_round=3, warmups=1, load_warmups=1, processes=2, chunk_size=8)
    out = tmp_path / "ort.csv"
    table = build_table(space, bb, out=out, backend="onnxruntime", threads=1, protocol=pr, progress=False)
    loaded = LatencyTable.load(out)
    assert set(loaded.rows) == {s.key for s in enumerate_layers(space, bb)}
    assert all(r.latency_ms > 0 and r.runs == 2 * 2 * 3 for r in loaded.rows.values())
    m = loaded.meta
    assert m.backend == "onnxruntime" and m.backend_version and m.threads == 1 and m.processes == 2
    assert m.environment["cpu_model"] and m.environment["cpu_cores_logical"] >= 1
    assert table.sum_ms(space.smallest()) > 0
    assert not (tmp_path / ".ort.csv.work").exists()


def test_measure_models_over_several_chunks_keeps_order_and_aligns_chunks(small_space: SearchSpace, mnist_backbone: Backbone) -> None:
    import numpy as np

    from latency_tables.table import measure_models

    rng = np.random.default_rng(5)
    archs = list({small_space.sample(rng) for _ in range(9)})
    pr = MeasurementProtocol(rounds=2, runs_per_round=3, processes=2, spawn=False, chunk_size=4)
    ms = measure_models(archs, mnist_backbone, backend="fake", protocol=pr, anchors=2)
    assert [m.key for m in ms] == [str(a) for a in archs]
    env = ms[0].environment
    assert env["anchors"] == 2 and len(env["chunk_scale"]) == 4  # 7 non-anchors, 2 per chunk
    assert all(m.latency_ms > 0 and len(m.per_process_ms) == 2 for m in ms)


def test_parallel_export_writes_the_same_models_as_a_sequential_one(tmp_path: Path) -> None:
    """export_jobs=2 (spawned converters) leaves the same file names with the same graphs, advances the progress once
    per model, and a rerun finds every file and exports nothing."""
    import onnx

    from latency_tables.backends import create_backend
    from latency_tables.table import layer_entry, prepare_items

    space = SearchSpace(name="tiny", resolutions=(24,), depth_choices=(1,), kernel_choices=(3,), expand_choices=(3, 6))
    entries = [layer_entry(s) for s in enumerate_layers(space, Backbone(in_channels=1, num_classes=10, width_mult=0.5))]
    kwargs = {"threads": 1, "precision": "fp32"}
    be = create_backend("onnxruntime", **kwargs)
    ticks: list[int] = []
    par = prepare_items(entries, be, tmp_path / "par", on_export=lambda: ticks.append(1), jobs=2,
                         backend_spec=("onnxruntime", kwargs))
    seq = prepare_items(entries, be, tmp_path / "seq")
    assert len(ticks) == len(entries)
    assert [Path(i.artifact).name for i in par] == [Path(i.artifact).name for i in seq]  # type: ignore[arg-type]
    for p, s in zip(par, seq, strict=True):
        gp, gs = onnx.load(p.artifact).graph, onnx.load(s.artifact).graph
        assert [n.op_type for n in gp.node] == [n.op_type for n in gs.node]
    mtimes = [Path(i.artifact).stat().st_mtime_ns for i in par]  # type: ignore[arg-type]
    again = prepare_items(entries, be, tmp_path / "par", jobs=2, backend_spec=("onnxruntime", kwargs))
    assert [Path(i.artifact).stat().st_mtime_ns for i in again] == mtimes  # type: ignore[arg-type]


def test_parallel_export_reports_a_worker_failure(tmp_path: Path) -> None:
    import functools

    from latency_tables.backends import create_backend
    from latency_tables.table import prepare_items
    from supernet.layers import LayerSpec, build_layer

    bad_factory = functools.partial(build_layer, LayerSpec(op="no-such-op", in_hw=8, in_ch=8, out_ch=8))
    entries = [("bad-1", bad_factory, (1, 8, 8, 8)), ("bad-2", bad_factory, (1, 8, 8, 8))]
    be = create_backend("onnxruntime", threads=1, precision="fp32")
    with pytest.raises(ValueError, match="export jobs must be >= 1, got 0"):
        prepare_items(entries, be, tmp_path, jobs=0)
    with pytest.raises(ValueError, match="backend_spec"):
        prepare_items(entries, be, tmp_path, jobs=2)
    with pytest.raises(ValueError, match="no-such-op"):
        prepare_items(entries, be, tmp_path, jobs=2, backend_spec=("onnxruntime", {"threads": 1, "precision": "fp32"}))


def test_chunk_alignment_weighs_chunks_by_their_models() -> None:
    """Three full chunks at one level and a short one far off: the common level is the full chunks'; each chunk's
    factor moves its anchors there."""
    import types

    import numpy as np

    from latency_tables.table import _chunk_alignment

    def chunk(level: float, n: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(keys=[f"m{i}" for i in range(n)], estimate_ms=np.array([1.0, 2.0] + [1.0] * (n - 2)) * level)

    fits = [chunk(1.0, 40), chunk(1.0, 40), chunk(1.3, 40), chunk(2.0, 6)]
    scale = _chunk_alignment(fits, n_anchor=2)
    assert scale[0] == pytest.approx(1.0) and scale[1] == pytest.approx(1.0)
    assert scale[2] == pytest.approx(1 / 1.3) and scale[3] == pytest.approx(0.5)
    # equal sizes: the plain median of chunk levels (here between 1.0 and 1.3)
    even = _chunk_alignment([chunk(1.0, 10), chunk(1.0, 10), chunk(1.3, 10), chunk(2.0, 10)], n_anchor=2)
    assert even[0] == pytest.approx(np.sqrt(1.3)) and even[3] == pytest.approx(np.sqrt(1.3) / 2)


def test_manifest_records_the_delegation_of_the_measured_models(tmp_path: Path, small_space: SearchSpace,
                                                                mnist_backbone: Backbone,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a backend reports per loaded model (TFLite: which delegate ran how many nodes) is summed into the
    table's manifest; here the fake backend reports one node of each model left on built-in kernels."""
    from latency_tables.backends.fake import FakeBackend

    real_load = FakeBackend.load

    def load(self: FakeBackend, *args: object, **kwargs: object) -> object:
        p = real_load(self, *args, **kwargs)  # type: ignore[arg-type]
        p.extra["delegation"] = {"delegate": "XNNPACK", "partitions": 2, "delegated_nodes": 3, "total_nodes": 4,
                                 "undelegated_ops": {"HARD_SWISH": 1}}
        return p

    monkeypatch.setattr(FakeBackend, "load", load)
    table = build_table(small_space, mnist_backbone, out=tmp_path / "lut.csv", backend="fake",
                        protocol=FAKE_PROTOCOL, progress=False)
    n = len(table.rows)
    d = LatencyTable.load(tmp_path / "lut.csv").meta.environment["delegation"]
    assert d == {"delegate": "XNNPACK", "models": n, "fully_delegated_models": 0, "max_partitions": 2,
                 "delegated_nodes": 3 * n, "total_nodes": 4 * n, "undelegated_ops": {"HARD_SWISH": n}}


def test_manifest_has_no_delegation_entry_when_the_backend_reports_none(tmp_path: Path, small_space: SearchSpace,
                                                                        mnist_backbone: Backbone) -> None:
    build_table(small_space, mnist_backbone, out=tmp_path / "lut.csv", backend="fake", protocol=FAKE_PROTOCOL,
                progress=False)
    assert "delegation" not in LatencyTable.load(tmp_path / "lut.csv").meta.environment
