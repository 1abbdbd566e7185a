"""OFA's ``<r>_lookup_table.yaml`` format: import (a file in OFA's exact format), export, round trip, bad input."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from latency_tables.ofa_yaml import OfaYamlError, export_ofa_yaml, import_ofa_yaml, ofa_keys
from latency_tables.predictor import fit_correction
from latency_tables.table import (
    ArchOutsideTableError,
    LatencyTable,
    MissingLayerError,
    TableRow,
    enumerate_layers,
)
from supernet.layers import Backbone, layer_specs
from supernet.space import get_space

OFA_DIR = Path(__file__).resolve().parent / "fixtures" / "ofa_yaml"


def _synthetic_ofa_table(fake_table: LatencyTable, *, width_mult: float, resolutions: tuple[int, ...],
                         statistic: str = "median") -> LatencyTable:
    """An ofa-mbv3 table with every layer at ``resolutions`` (latency from MACs; no measuring)."""
    space = replace(get_space("ofa-mbv3"), resolutions=resolutions)
    bb = Backbone(width_mult=width_mult)
    rows = {}
    for s in enumerate_layers(space, bb):
        base = 0.02 + s.macs() * 2e-9
        stats = {"median": base, "best": base * 0.95, "p90": base * 1.1, "p99": base * 1.3}
        rows[s.key] = TableRow(spec=s, latency_ms=stats[statistic], ratio=base / 0.5, p50_ms=base, iqr_ms=base * 0.02,
                               runs=480, stats=stats)
    meta = replace(fake_table.meta, space=space.to_json(), backbone=bb.to_json(), n_rows=len(rows))
    return LatencyTable(rows=rows, meta=meta).with_statistic(statistic)


def test_ofa_key_format_matches_ofa_latency_lookup_table() -> None:
    bb = Backbone(width_mult=1.0)
    specs = layer_specs(bb, get_space("ofa-mbv3").largest(224))
    keys = [k for s in specs for k in ofa_keys(s)]
    assert keys[0] == "Conv-input:224x224x3-output:112x112x16"
    assert keys[1] == ("expanded_conv-input:112x112x16-output:112x112x16-expand:16-kernel:3-stride:1-idskip:1-se:0-hs:0")
    assert keys[2] == ("expanded_conv-input:112x112x16-output:56x56x24-expand:96-kernel:7-stride:2-idskip:0-se:0-hs:0")
    assert "expanded_conv-input:28x28x40-output:14x14x80-expand:240-kernel:7-stride:2-idskip:0-se:0-hs:1" in keys
    # stride 1 but a new width (stage 4's first block): no residual, so idskip 0 as in OFA's ResidualBlock
    assert "expanded_conv-input:14x14x80-output:14x14x112-expand:480-kernel:7-stride:1-idskip:0-se:1-hs:1" in keys
    assert "expanded_conv-input:14x14x112-output:14x14x112-expand:672-kernel:7-stride:1-idskip:1-se:1-hs:1" in keys
    assert keys[-4:] == ["Conv_1-input:7x7x160-output:7x7x960", "AvgPool2D-input:7x7x960-output:1x1x960",
                         "Conv_2-input:1x1x960-output:1x1x1280", "Logits-input:1x1x1280-output:1000"]


def test_captured_ofa_yaml_imports_and_sums_by_hand(tmp_path: Path) -> None:
    """A file in OFA's exact format (one subnet's keys): the table's sum is the file's means summed by hand."""
    t = import_ofa_yaml(OFA_DIR, out=tmp_path / "t.csv", allow_missing=True, device="phone")
    assert t.statistic == "mean" and t.meta.source == "ofa-yaml" and t.space.resolutions == (160,)
    assert t.backbone.width_mult == 1.0 and t.backbone.num_classes == 1000
    raw = yaml.safe_load((OFA_DIR / "160_lookup_table.yaml").read_text())
    cfg = get_space("ofa-mbv3").smallest(160)
    assert LatencyTable.load(tmp_path / "t.csv").sum_ms(cfg) == pytest.approx(sum(v["mean"] for v in raw.values()))
    # the subnet the file was captured from is covered; a larger one needs layers the file lacks
    with pytest.raises(MissingLayerError, match="no row for layer"):
        t.sum_ms(get_space("ofa-mbv3").largest(160))
    # a subnet at a resolution that has no file says which
    with pytest.raises(ArchOutsideTableError, match=r"resolution: 224 px is not one the table was built for.*\[160\]"):
        t.sum_ms(get_space("ofa-mbv3").smallest(224))


def test_import_without_allow_missing_lists_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(OfaYamlError, match=r"layer key\(s\) of space 'ofa-mbv3' are missing, e.g. \['160_lookup_table"):
        import_ofa_yaml(OFA_DIR, out=tmp_path / "t.csv")


@pytest.mark.parametrize("width_mult", [1.0, 1.2])
def test_round_trip_ours_yaml_ours_predicts_identically(fake_table: LatencyTable, tmp_path: Path,
                                                        width_mult: float) -> None:
    ours = _synthetic_ofa_table(fake_table, width_mult=width_mult, resolutions=(128, 132, 136))
    ours = ours.save(tmp_path / "ours.csv").with_statistic("p99")
    files = export_ofa_yaml(ours, tmp_path / "yaml")
    assert [f.name for f in files] == ["128_lookup_table.yaml", "132_lookup_table.yaml", "136_lookup_table.yaml"]
    back = import_ofa_yaml(tmp_path / "yaml", out=tmp_path / "back.csv")
    assert back.statistic == "p99" and back.backbone == ours.backbone and len(back) == len(ours)
    rng = np.random.default_rng(0)
    archs = [ours.space.sample(rng) for _ in range(40)]
    assert [back.sum_ms(a) for a in archs] == [ours.sum_ms(a) for a in archs]
    y = np.asarray([ours.sum_ms(a) * 0.7 for a in archs])
    p_ours = fit_correction(ours, archs[:20], y[:20], features="compact").predict(archs[20:])
    p_back = fit_correction(back, archs[:20], y[:20], features="compact").predict(archs[20:])
    np.testing.assert_array_equal(p_ours, p_back)


def test_exported_yaml_is_ofas_exact_layout(fake_table: LatencyTable, tmp_path: Path) -> None:
    ours = _synthetic_ofa_table(fake_table, width_mult=1.2, resolutions=(224,))
    export_ofa_yaml(ours, tmp_path / "y")
    d = yaml.safe_load((tmp_path / "y" / "224_lookup_table.yaml").read_text())
    assert "Conv-input:224x224x3-output:112x112x24" in d
    assert "Conv_1-input:7x7x192-output:7x7x1152" in d and "Conv_2-input:1x1x1152-output:1x1x1536" in d
    v = d["Conv-input:224x224x3-output:112x112x24"]
    assert set(v) == {"count", "mean", "std"} and v["count"] == 480
    # OFA sums AvgPool2D + Conv_2 + Logits: together they are our head
    head = next(s for s in ours.rows.values() if s.spec.op == "head")
    parts = [d[k]["mean"] for k in ofa_keys(head.spec)]
    assert sum(parts) == pytest.approx(head.latency_ms)


def _copy_fixture(tmp_path: Path) -> Path:
    d = tmp_path / "ofa"
    shutil.copytree(OFA_DIR, d)
    return d


def test_malformed_key_is_named(tmp_path: Path) -> None:
    d = _copy_fixture(tmp_path)
    f = d / "160_lookup_table.yaml"
    f.write_text(f.read_text() + "Conv-input:160x160-output:80x80x16:\n  count: 1\n  mean: 0.1\n  std: 0\n")
    with pytest.raises(OfaYamlError, match=r"160_lookup_table.yaml: 1 malformed key\(s\), e.g. \['Conv-input:160x160-"):
        import_ofa_yaml(d, out=tmp_path / "t.csv", allow_missing=True)


def test_unmapped_key_is_listed_never_skipped(tmp_path: Path) -> None:
    d = _copy_fixture(tmp_path)
    f = d / "160_lookup_table.yaml"
    bad = "expanded_conv-input:80x80x16-output:40x40x24-expand:100-kernel:3-stride:2-idskip:0-se:0-hs:0"
    f.write_text(f.read_text() + f"{bad}:\n  count: 1\n  mean: 0.1\n  std: 0\n")
    with pytest.raises(OfaYamlError, match=r"160_lookup_table.yaml: 1 key\(s\) map to no layer.*expand:100"):
        import_ofa_yaml(d, out=tmp_path / "t.csv", allow_missing=True)


def test_width_that_matches_no_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OfaYamlError, match=r"first conv of 16 channels matches no backbone width --width-mult 1.2"):
        import_ofa_yaml(OFA_DIR, out=tmp_path / "t.csv", width_mult=1.2, allow_missing=True)


@pytest.mark.parametrize("body, match", [
    ("- just\n- a list\n", "expected a mapping of OFA layer keys"),
    ("Conv-input:160x160x3-output:80x80x16: 0.5\n", "expected a mapping with 'mean'"),
    ("Conv-input:160x160x3-output:80x80x16:\n  mean: fast\n", "must be numbers"),
    ("key: [unclosed\n", "not valid YAML"),
])
def test_bad_yaml_values_name_file_and_key(tmp_path: Path, body: str, match: str) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "160_lookup_table.yaml").write_text(body)
    with pytest.raises(OfaYamlError, match=match):
        import_ofa_yaml(d, out=tmp_path / "t.csv", allow_missing=True)


def test_folder_without_yaml_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OfaYamlError, match="no '<resolution>_lookup_table.yaml' files"):
        import_ofa_yaml(tmp_path, out=tmp_path / "t.csv")
