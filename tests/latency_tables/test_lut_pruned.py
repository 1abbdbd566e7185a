"""Pricing pruned subnets: never with a row of another width; new shapes measured on the table's scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from latency_tables.predictor import LatencyPredictor
from latency_tables.pruned import (
    UnpricedLayerError,
    extend_table,
    missing_layers,
    predict_pruned,
    price_pruned,
)
from latency_tables.table import LatencyTable
from supernet.errors import InputError
from supernet.prune import PrunedArch


def _halved(table: LatencyTable) -> tuple[PrunedArch, PrunedArch]:
    arch = table.space.largest()
    full = PrunedArch.unpruned(table.backbone, arch)
    half = PrunedArch(arch=arch, mid_channels=tuple(max(8, m // 2) for m in full.mid_channels))
    return full, half


def test_unpruned_widths_price_as_the_table_sum(fake_table: LatencyTable) -> None:
    full, _ = _halved(fake_table)
    rows = price_pruned(fake_table, full)
    assert sum(ms for _, ms in rows) == pytest.approx(fake_table.sum_ms(full.arch))
    assert predict_pruned(LatencyPredictor.from_table(fake_table), full) == pytest.approx(fake_table.sum_ms(full.arch))


def test_pruned_widths_are_refused_by_name(fake_table: LatencyTable) -> None:
    _, half = _halved(fake_table)
    missing = missing_layers(fake_table, half.specs(fake_table.backbone))
    assert missing and all(s.key not in fake_table.rows for s in missing)
    with pytest.raises(UnpricedLayerError, match=rf"cannot price the pruned subnet .*{len(missing)} of its layers") as e:
        price_pruned(fake_table, half)
    assert missing[0].key in str(e.value) and str(fake_table.path) in str(e.value)
    assert isinstance(e.value, InputError)


def test_extend_table_measures_only_the_new_shapes(fake_table: LatencyTable, tmp_path: Path) -> None:
    full, half = _halved(fake_table)
    out = tmp_path / "extended.csv"
    ext = extend_table(fake_table, half.specs(fake_table.backbone), out=out)
    new = set(ext.rows) - set(fake_table.rows)
    assert new == {s.key for s in missing_layers(fake_table, half.specs(fake_table.backbone))}
    for k, r in fake_table.rows.items():  # the table's own rows are carried over unchanged
        assert ext.rows[k].latency_ms == pytest.approx(r.latency_ms, rel=1e-6)
    loaded = LatencyTable.load(out)  # a valid table: hash and row count checked
    assert loaded.meta.environment["extended"][0]["keys"] == sorted(new)
    pruned_ms = sum(ms for _, ms in price_pruned(loaded, half))
    assert pruned_ms < sum(ms for _, ms in price_pruned(loaded, full))  # fake latency grows with MACs
    for s in half.specs(fake_table.backbone):  # a halved block costs less than its unpruned row
        if s.key in new:
            unpruned = next(u for u in full.specs(fake_table.backbone) if u.op == s.op and u.in_hw == s.in_hw
                            and u.in_ch == s.in_ch and u.kernel == s.kernel and u.expand == s.expand
                            and u.stride == s.stride and u.out_ch == s.out_ch)
            assert loaded.rows[s.key].latency_ms < loaded.rows[unpruned.key].latency_ms
