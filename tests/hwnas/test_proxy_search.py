"""Search at latency targets with a stated accuracy proxy (no supernet): winners meet the target, named statistic."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwnas.proxy_search import search_with_proxy, summary_rate
from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import StatisticMismatchError, build_table
from supernet.layers import Backbone
from supernet.space import SearchSpace

PROTO = MeasurementProtocol(rounds=2, runs_per_round=3, warmups=1, load_warmups=1, processes=2, chunk_size=16,
                            spawn=False)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    space = SearchSpace(name="proxy-test", resolutions=(24, 28), depth_choices=(1, 2), kernel_choices=(3, 5),
                        expand_choices=(3, 6))
    out = tmp_path_factory.mktemp("proxy") / "t.csv"
    build_table(space, Backbone(in_channels=1, num_classes=10), out=out, backend="fake", protocol=PROTO,
                progress=False)
    return out


def test_proxy_search_winners_meet_targets_in_the_named_statistic(table_path: Path) -> None:
    from latency_tables.table import LatencyTable

    t99 = LatencyTable.load(table_path, statistic="p99")
    lo = t99.sum_ms(t99.space.smallest(24))
    hi = t99.sum_ms(t99.space.largest(28))
    targets = [lo + 0.4 * (hi - lo), lo + 0.8 * (hi - lo)]
    res = search_with_proxy(table_path, targets_ms=targets, statistic="p99", budget=60, measure=True, protocol=PROTO)
    assert [r.statistic for r in res] == ["p99", "p99"] and "NOT an accuracy" in res[0].accuracy_source
    for r in res:
        assert r.predicted_ms <= r.target_ms
        assert r.measured_ms is not None and r.measured_ms == r.measurement["stats_ms"]["p99"]
    assert res[1].proxy >= res[0].proxy  # a looser target allows at least as much compute
    assert summary_rate(res) is not None


def test_proxy_search_refuses_a_predictor_of_another_statistic(table_path: Path, tmp_path: Path) -> None:
    import numpy as np

    from latency_tables.predictor import fit_correction
    from latency_tables.table import LatencyTable

    t = LatencyTable.load(table_path)
    rng = np.random.default_rng(0)
    archs = [t.space.sample(rng) for _ in range(12)]
    p = fit_correction(t, archs, [t.sum_ms(a) for a in archs], features="compact").save(tmp_path / "median.json")
    with pytest.raises(StatisticMismatchError, match="'median'"):
        search_with_proxy(table_path, targets_ms=[1.0], predictor_path=p, statistic="p99", measure=False)
