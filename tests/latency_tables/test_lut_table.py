"""LatencyTable: CSV + manifest round trip, integrity errors, lookups and sums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latency_tables.table import (
    CSV_COLUMNS,
    TABLE_SCHEMA_VERSION,
    ArchOutsideTableError,
    LatencyTable,
    LatencyTableError,
    MissingLayerError,
    TableHashError,
    TableSchemaError,
    enumerate_layers,
    meta_path_for,
)
from supernet.layers import Backbone, LayerSpec, layer_specs
from supernet.space import ArchConfig, SearchSpace, get_space

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tables"


def test_round_trip_keeps_rows_and_manifest(fake_table: LatencyTable, tmp_path: Path) -> None:
    saved = fake_table.save(tmp_path / "again.csv")
    loaded = LatencyTable.load(tmp_path / "again.csv")
    assert set(loaded.rows) == set(fake_table.rows)
    for k, row in fake_table.rows.items():
        assert loaded.rows[k].spec == row.spec
        assert loaded.rows[k].latency_ms == pytest.approx(row.latency_ms, rel=1e-5, abs=1e-6)
        assert loaded.rows[k].runs == row.runs
    assert loaded.meta == saved.meta
    header = (tmp_path / "again.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == CSV_COLUMNS


def test_manifest_states_machine_backend_and_protocol(fake_table: LatencyTable) -> None:
    m = fake_table.meta
    assert m.schema_version == TABLE_SCHEMA_VERSION and m.backend == "fake" and m.precision == "fp32" and m.threads == 1
    assert m.device == "test-device" and m.cpu_model
    assert m.processes == 3 and m.rounds == 3 and m.runs == 5 and m.batch_size == 1
    assert m.reference["latency_ms"] > 0
    assert m.test_retest is not None and 0.0 <= m.test_retest["within_10pct"] <= 1.0
    assert SearchSpace.from_json(m.space).name == "lut-test"
    assert m.n_rows == len(fake_table) and len(m.csv_sha256) == 64


def test_sum_equals_rows_summed_by_hand(fake_table: LatencyTable, small_space: SearchSpace, rng: np.random.Generator) -> None:
    csv_text = Path(fake_table.path).read_text().splitlines()  # type: ignore[arg-type]
    by_key = {line.split(",")[0]: float(line.split(",")[CSV_COLUMNS.index("median_ms")]) for line in csv_text[1:]}
    for _ in range(10):
        cfg = small_space.sample(rng)
        by_hand = sum(by_key[s.key] for s in layer_specs(fake_table.backbone, cfg))
        assert fake_table.sum_ms(cfg) == pytest.approx(by_hand, rel=1e-9)


def test_enumerate_layers_covers_every_layer_of_sampled_archs(rng: np.random.Generator) -> None:
    space = get_space("mnist")
    bb = Backbone(in_channels=1, num_classes=10, width_mult=1.0)
    keys = {s.key for s in enumerate_layers(space, bb)}
    specs = enumerate_layers(space, bb)
    assert specs == sorted(specs) and len(keys) == len(specs)
    for _ in range(50):
        cfg = space.sample(rng)
        missing = [s.key for s in layer_specs(bb, cfg) if s.key not in keys]
        assert not missing, f"{cfg}: {missing}"


def test_enumerate_layers_has_nothing_unreachable(small_space: SearchSpace, mnist_backbone: Backbone) -> None:
    """Every enumerated layer occurs in some architecture (exhaustive over uniform + random archs)."""
    rng = np.random.default_rng(0)
    reached = set()
    for _ in range(400):
        reached.update(s.key for s in layer_specs(mnist_backbone, small_space.sample(rng)))
    assert {s.key for s in enumerate_layers(small_space, mnist_backbone)} == reached


def test_hash_mismatch_names_the_file(fake_table_copy: Path) -> None:
    text = fake_table_copy.read_text()
    lines = text.splitlines()
    parts = lines[1].split(",")
    parts[CSV_COLUMNS.index("median_ms")] = "9.999999"
    fake_table_copy.write_text("\n".join([lines[0], ",".join(parts), *lines[2:]]) + "\n")
    with pytest.raises(TableHashError, match=str(fake_table_copy.name)):
        LatencyTable.load(fake_table_copy)


def test_unknown_schema_version_is_refused(fake_table_copy: Path) -> None:
    mp = meta_path_for(fake_table_copy)
    d = json.loads(mp.read_text())
    d["schema_version"] = 99
    mp.write_text(json.dumps(d))
    with pytest.raises(TableSchemaError, match="schema_version 99 is not supported"):
        LatencyTable.load(fake_table_copy)


def test_missing_manifest_field_is_named(fake_table_copy: Path) -> None:
    mp = meta_path_for(fake_table_copy)
    d = json.loads(mp.read_text())
    del d["backend"]
    mp.write_text(json.dumps(d))
    with pytest.raises(TableSchemaError, match=r"missing field\(s\) \['backend'\]"):
        LatencyTable.load(fake_table_copy)


def test_missing_manifest_file(fake_table_copy: Path) -> None:
    meta_path_for(fake_table_copy).unlink()
    with pytest.raises(LatencyTableError, match="manifest"):
        LatencyTable.load(fake_table_copy)


def test_wrong_csv_header_is_explained(fake_table: LatencyTable, tmp_path: Path) -> None:
    t = fake_table.save(tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text().replace("median_ms", "lat", 1)
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(TableSchemaError, match=r"missing columns \['median_ms'\]"):
        LatencyTable.load(tmp_path / "t.csv", check_hash=False)
    assert t.meta.n_rows > 0


def test_missing_layer_names_layer_and_table(fake_table: LatencyTable) -> None:
    spec = LayerSpec("mbconv", 999, 8, 8, kernel=3, stride=1, expand=3, mid_ch=24, se=False, act="relu")
    with pytest.raises(MissingLayerError, match=r"lut\.csv has no row for layer mbconv:hw999"):
        fake_table.lookup(spec)
    assert isinstance(MissingLayerError("x"), LookupError)


def test_arch_outside_space_is_named(fake_table: LatencyTable, small_space: SearchSpace) -> None:
    cfg = small_space.largest()
    bad = ArchConfig(resolution=32, depths=cfg.depths, kernel_sizes=cfg.kernel_sizes, expand_ratios=cfg.expand_ratios)
    with pytest.raises(ArchOutsideTableError, match=r"outside the space 'lut-test'.*resolution: 32"):
        fake_table.sum_ms(bad)
    k7 = ArchConfig(cfg.resolution, cfg.depths, (7,) * len(cfg.kernel_sizes), cfg.expand_ratios)
    with pytest.raises(ArchOutsideTableError, match="kernel_sizes"):
        fake_table.sum_ms(k7)


@pytest.mark.parametrize("csv_name", sorted(p.name for p in FIXTURES.glob("*.csv")))
def test_fixture_of_every_schema_version_still_loads(csv_name: str) -> None:
    table = LatencyTable.load(FIXTURES / csv_name)
    assert len(table) == table.meta.n_rows > 0
    cfg = table.space.smallest()
    assert table.sum_ms(cfg) > 0


def test_there_is_a_fixture_for_every_schema_version_the_loader_reads() -> None:

    versions = {json.loads(p.read_text())["schema_version"] for p in FIXTURES.glob("*.meta.json")}
    assert versions == set(range(1, TABLE_SCHEMA_VERSION + 1))  # one fixture per schema version, the current one too
