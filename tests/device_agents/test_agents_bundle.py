"""Bundle: build, manifest contents, verified loading with clear errors, the checked-in v1 fixture, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from agents_helpers import DATA
from typer.testing import CliRunner

from device_agents import Variant, save_variants
from device_agents.bundle import (
    BUNDLE_SCHEMA_VERSION,
    VARIANTS_FILE_TABLE,
    BundleError,
    BundleHashError,
    BundleSchemaError,
    build_bundle,
    load_bundle,
    manifest_digest,
)
from hwnas.commands.agent import app
from supernet.layers import Backbone

FIXTURE_TABLE = Path(__file__).parents[1] / "latency_tables" / "fixtures" / "tables" / "schema-v1-fake.csv"


def test_build_and_load_round_trip(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    b = build_bundle(tiny_variants, tmp_path / "b", tables={"double": lambda arch: 2.0})
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["schema_version"] == BUNDLE_SCHEMA_VERSION and m["created_at"]
    assert set(m["tables"]) == {VARIANTS_FILE_TABLE, "double"}
    power = m["power_model"]["static_power_w"] + m["power_model"]["dynamic_power_w"]
    for v, e in zip(tiny_variants, m["variants"], strict=True):
        assert e["precision"] == "fp32" and e["accuracy"] == v.accuracy
        assert e["predicted_latency_ms"] == {VARIANTS_FILE_TABLE: v.predicted_latency_ms, "double": 2.0}
        assert e["energy_estimate_mj"][VARIANTS_FILE_TABLE] == pytest.approx(power * v.predicted_latency_ms)
        (f,) = e["files"]
        assert f["format"] == "onnx" and len(f["sha256"]) == 64 and f["path"].startswith("models/")
        assert f["size_bytes"] == e["size_bytes"] == Path(v.model_path or "").stat().st_size
        assert f["input_shape"][:2] == [1, 1]
    loaded = load_bundle(tmp_path / "b")
    assert loaded.to_json()["variants"] == m["variants"] == b.to_json()["variants"]
    vs = loaded.variants(table="double")
    assert [v.predicted_latency_ms for v in vs] == [2.0, 2.0, 2.0]
    assert all(Path(v.model_path or "").is_file() and Path(v.model_path or "").parent.name == "models" for v in vs)
    assert [v.predicted_latency_ms for v in loaded.variants()] == [v.predicted_latency_ms for v in tiny_variants]


def test_latency_table_column_is_the_lut_sum(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    from latency_tables import LatencyTable

    table = LatencyTable.load(FIXTURE_TABLE)
    arch = str(table.space.smallest())
    v = Variant(name="s", arch=arch, precision="fp32", predicted_latency_ms=1.0, accuracy=0.5,
                model_path=tiny_variants[0].model_path)
    b = build_bundle([v], tmp_path / "b", tables={"fake-lut": FIXTURE_TABLE}, default_table="fake-lut")
    assert b.entries[0].predicted_latency_ms["fake-lut"] == pytest.approx(table.sum_ms(table.space.smallest()))
    assert b.tables["fake-lut"]["csv_sha256"] == table.meta.csv_sha256
    assert load_bundle(tmp_path / "b").variants()[0].predicted_latency_ms == pytest.approx(table.sum_ms(
        table.space.smallest()))
    bad = Variant(name="x", arch="r999-d1", precision="fp32", predicted_latency_ms=1.0, accuracy=0.5,
                  model_path=tiny_variants[0].model_path)
    with pytest.raises(BundleError, match="variant 'x': latency table 'fake-lut' cannot predict"):
        build_bundle([bad], tmp_path / "c", tables={"fake-lut": FIXTURE_TABLE})


def _int8_copy_of_fixture(tmp_path: Path) -> tuple[Path, float]:
    """The fp32 fixture table relabelled int8 with every latency tripled (so a mix-up shows in the numbers)."""
    import csv

    rows = list(csv.DictReader(FIXTURE_TABLE.open()))
    cols = [c for c in rows[0] if c.endswith("_ms")]
    for r in rows:
        for c in cols:
            r[c] = repr(3 * float(r[c]))
    out = tmp_path / "int8.csv"
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import hashlib

    meta = json.loads(Path(f"{FIXTURE_TABLE}.meta.json").read_text())
    meta["precision"] = "int8"
    meta["csv_sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    Path(f"{out}.meta.json").write_text(json.dumps(meta))
    return out, 3.0


def _int8_model(v: Variant, tmp_path: Path) -> Path:
    """``v``'s ONNX file quantized to int8 (QDQ per-channel, seeded random calibration)."""
    import numpy as np

    from supernet.quantize import QuantConfig, quantize_onnx

    side = int(v.arch.rsplit("-r", 1)[1])
    calib = [np.random.default_rng(0).standard_normal((1, 1, side, side)).astype(np.float32)]
    return quantize_onnx(v.model_path or "", tmp_path / "int8.onnx", config=QuantConfig(calib_images=1),
                         calib_batches=calib)


def test_a_variant_whose_file_is_not_at_its_precision_is_refused(
        tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    """An int8 label on an fp32 file would get int8-table latency for a model that runs at fp32, and back."""
    _int8_path, _ = _int8_copy_of_fixture(tmp_path)
    fp32_file, int8_file = tiny_variants[0].model_path, str(_int8_model(tiny_variants[0], tmp_path))
    for label, f, stored in (("int8", fp32_file, "float32 100%"), ("fp32", int8_file, "int8 100%")):
        v = Variant(name="v", arch="a", precision=label, predicted_latency_ms=1.0, accuracy=0.5, model_path=f)
        with pytest.raises(BundleError, match=f"'v' is labelled {label} but its model file .* stores weights as "
                                              f"{stored}"):
            build_bundle([v], tmp_path / f"b-{label}")


def test_a_column_refuses_tables_of_different_devices_or_backends(
        tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    import hashlib

    int8_path, _ = _int8_copy_of_fixture(tmp_path)
    for field, value in (("device", "another-phone"), ("threads", 4), ("backend", "onnxruntime")):
        meta = json.loads(Path(f"{int8_path}.meta.json").read_text())
        if meta[field] == value:
            value = "other"
        meta[field] = value
        other = tmp_path / f"int8-{field}.csv"
        shutil.copyfile(int8_path, other)
        meta["csv_sha256"] = hashlib.sha256(other.read_bytes()).hexdigest()
        Path(f"{other}.meta.json").write_text(json.dumps(meta))
        with pytest.raises(BundleError, match=f"column 'cpu': its tables differ in {field}"):
            build_bundle(tiny_variants, tmp_path / f"b-{field}", tables={"cpu": [FIXTURE_TABLE, other]})


def test_each_variant_takes_latency_from_the_table_of_its_own_precision(
        tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    from latency_tables import LatencyTable

    fp32 = LatencyTable.load(FIXTURE_TABLE)
    int8_path, factor = _int8_copy_of_fixture(tmp_path)
    arch = str(fp32.space.smallest())
    paths = {"fp32": tiny_variants[0].model_path, "int8": str(_int8_model(tiny_variants[0], tmp_path))}
    vs = [Variant(name=f"s@{p}", arch=arch, precision=p, predicted_latency_ms=1.0, accuracy=0.5,
                  model_path=paths[p]) for p in ("fp32", "int8")]
    b = build_bundle(vs, tmp_path / "b", tables={"cpu": [FIXTURE_TABLE, int8_path]}, default_table="cpu")
    ms = {e.precision: e.predicted_latency_ms["cpu"] for e in b.entries}
    assert ms["fp32"] == pytest.approx(fp32.sum_ms(fp32.space.smallest()))
    assert ms["int8"] == pytest.approx(factor * ms["fp32"], rel=1e-6)
    assert set(b.tables["cpu"]["per_precision"]) == {"fp32", "int8"}
    # an int8 variant with only an fp32 table: refused, never given fp32 numbers
    with pytest.raises(BundleError, match=r"'s@int8' is int8 but latency table column 'cpu' was measured at \['fp32'\]"):
        build_bundle(vs, tmp_path / "c", tables={"cpu": FIXTURE_TABLE})
    with pytest.raises(BundleError, match="two tables measured at precision 'fp32'"):
        build_bundle(vs, tmp_path / "d", tables={"cpu": [FIXTURE_TABLE, FIXTURE_TABLE]})
    # the CLI groups repeated NAME=PATH options into one column
    variants_file = tmp_path / "variants.json"
    save_variants(vs, variants_file)
    r = CliRunner().invoke(app, ["bundle", "--variants", str(variants_file), "--out", str(tmp_path / "e"),
                                 "--table", f"cpu={FIXTURE_TABLE}", "--table", f"cpu={int8_path}"])
    assert r.exit_code == 0, r.output
    assert {e.precision: e.predicted_latency_ms["cpu"] for e in load_bundle(tmp_path / "e").entries} == \
        pytest.approx(ms)


def test_build_errors(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    no_file = Variant(name="n", arch="a", precision="fp32", predicted_latency_ms=1.0, accuracy=0.5)
    with pytest.raises(BundleError, match="no model_path"):
        build_bundle([no_file], tmp_path / "a")
    gone = Variant(name="g", arch="a", precision="int8", predicted_latency_ms=1.0, accuracy=0.5,
                   model_path=str(tmp_path / "gone.onnx"))
    with pytest.raises(BundleError, match="does not exist"):
        build_bundle([gone], tmp_path / "a")
    with pytest.raises(BundleError, match="one file per format"):
        build_bundle(tiny_variants[:1], tmp_path / "a", extra_files={tiny_variants[0].name: [tiny_variants[1].model_path]})
    with pytest.raises(BundleError, match="not in the bundle"):
        build_bundle(tiny_variants[:1], tmp_path / "a", extra_files={"ghost": []})
    build_bundle(tiny_variants[:1], tmp_path / "b")
    with pytest.raises(BundleError, match="already holds"):
        build_bundle(tiny_variants[:1], tmp_path / "b")
    build_bundle(tiny_variants[1:], tmp_path / "b", overwrite=True)
    assert [e.name for e in load_bundle(tmp_path / "b").entries] == [v.name for v in tiny_variants[1:]]


def test_failed_build_leaves_nothing_and_foreign_folders_are_refused(tmp_path: Path,
                                                                      tiny_variants: tuple[Variant, ...]) -> None:
    # the second variant's file is missing: the first one's model was already copied when the build fails
    gone = Variant(name="g", arch="a", precision="fp32", predicted_latency_ms=1.0, accuracy=0.5,
                   model_path=str(tmp_path / "gone.onnx"))
    with pytest.raises(BundleError, match="does not exist"):
        build_bundle([tiny_variants[0], gone], tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed build left files behind"
    # a failed overwrite leaves the old bundle as it was
    build_bundle(tiny_variants[:1], tmp_path / "b")
    before = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    with pytest.raises(BundleError, match="does not exist"):
        build_bundle([tiny_variants[1], gone], tmp_path / "b", overwrite=True)
    after = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert after == before
    # replacing a bundle keeps the user's other files in that folder and drops the old models
    (tmp_path / "b" / "NOTES.txt").write_text("mine")
    build_bundle(tiny_variants[1:2], tmp_path / "b", overwrite=True)
    assert (tmp_path / "b" / "NOTES.txt").read_text() == "mine"
    assert [e.name for e in load_bundle(tmp_path / "b").entries] == [tiny_variants[1].name]
    assert len(list((tmp_path / "b" / "models").iterdir())) == 1
    # a folder with other things in it and no bundle is not taken over; a file is not a folder; empty is fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.txt").write_text("x")
    with pytest.raises(BundleError, match="not empty and holds no bundle"):
        build_bundle(tiny_variants[:1], tmp_path / "mine", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["x.txt"]
    (tmp_path / "f").write_text("")
    with pytest.raises(BundleError, match="is a file"):
        build_bundle(tiny_variants[:1], tmp_path / "f")
    (tmp_path / "empty").mkdir()
    assert build_bundle(tiny_variants[:1], tmp_path / "empty").root == tmp_path / "empty"
    load_bundle(tmp_path / "empty")
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_folder_given_for_a_model_file_is_called_a_folder(tmp_path: Path) -> None:
    v = Variant(name="d", arch="a", precision="fp32", predicted_latency_ms=1.0, accuracy=0.5, model_path=str(tmp_path))
    with pytest.raises(BundleError, match="is a folder; expected a file"):
        build_bundle([v], tmp_path / "out")


def test_relative_model_paths_resolve_against_base_dir(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    src = Path(tiny_variants[0].model_path or "")
    (tmp_path / "run" / "models").mkdir(parents=True)
    shutil.copy(src, tmp_path / "run" / "models" / "m.onnx")
    v = Variant(name="v", arch="a", precision="fp32", predicted_latency_ms=1.0, accuracy=0.5, model_path="models/m.onnx")
    b = build_bundle([v], tmp_path / "b", base_dir=tmp_path / "run")
    assert b.entries[0].files[0].size_bytes == src.stat().st_size


@pytest.fixture
def built(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> Path:
    build_bundle(tiny_variants, tmp_path / "b")
    return tmp_path / "b"


def _edit_manifest(root: Path, fn: object) -> None:
    """Edit the manifest and re-seal its content hash, as a hand-made (but malformed) manifest would be: the schema
    checks must name the field. (An edit without re-sealing is a `BundleHashError`: test_agents_ladder.)"""
    m = json.loads((root / "manifest.json").read_text())
    fn(m)  # type: ignore[operator]
    if isinstance(m, dict):
        m["content_sha256"] = manifest_digest(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_tampered_and_missing_files_are_refused(built: Path) -> None:
    model = next((built / "models").iterdir())
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleHashError, match=r"sha256 of models/.*the manifest records"):
        load_bundle(built)
    load_bundle(built, check_hashes=False)  # same size: only the hash tells
    model.write_bytes(bytes(data[:-1]))
    with pytest.raises(BundleHashError, match="bytes, the manifest records"):
        load_bundle(built, check_hashes=False)
    model.unlink()
    with pytest.raises(BundleHashError, match="is missing"):
        load_bundle(built)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(schema_version=3), "schema_version 3 is not supported"),
        (lambda m: m.update(kind="other"), "kind 'other'"),
        (lambda m: m.pop("variants"), "missing field 'variants'"),
        (lambda m: m["variants"][0].update(precision="int4"), "precision 'int4'"),
        (lambda m: m["variants"][0]["files"][0].update(path="../escape.onnx"), "must be relative and inside"),
        (lambda m: m["variants"][0]["predicted_latency_ms"].pop("variants-file"), r"predicted_latency_ms\['variants-file'\]"),
        (lambda m: m["variants"][1].update(name=m["variants"][0]["name"]), "more than once"),
        (lambda m: m["variants"][0].update(accuracy=80.0), "fraction in"),
        (lambda m: m.update(default_table="nope"), "default_table 'nope'"),
    ],
)
def test_schema_errors_name_the_field(built: Path, edit: object, message: str) -> None:
    _edit_manifest(built, edit)
    with pytest.raises(BundleSchemaError, match=message):
        load_bundle(built)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleSchemaError, match="no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleSchemaError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_checked_in_v1_fixture_still_loads() -> None:
    b = load_bundle(DATA / "bundle_v1")
    assert b.schema_version == 1 and [e.name for e in b.entries] == ["tiny@fp32"]
    assert b.entries[0].files[0].input_shape == (1, 1, 8, 8)
    (v,) = b.variants()
    assert v.precision == "fp32" and Path(v.model_path or "").is_file()


def test_cli_bundle(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    save_variants(tiny_variants, tmp_path / "variants.json")
    runner = CliRunner()
    res = runner.invoke(app, ["bundle", "--variants", str(tmp_path / "variants.json"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert len(load_bundle(tmp_path / "b").entries) == 3
    res = runner.invoke(app, ["bundle", "--variants", str(tmp_path / "variants.json"), "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "already holds" in res.output
    res = runner.invoke(app, ["bundle", "--variants", str(tmp_path / "variants.json"), "--out", str(tmp_path / "c"),
                              "--table", "nonsense"])
    assert res.exit_code != 0 and "NAME=PATH" in res.output


def test_agent_can_plan_on_the_tail(tmp_path: Path, tiny_variants: tuple[Variant, ...]) -> None:
    """A table opened at p99 gives the agent a tail-latency column, and the manifest names the statistic."""
    from latency_tables import LatencyTable

    v2 = FIXTURE_TABLE.with_name("schema-v2-fake.csv")
    med, p99 = LatencyTable.load(v2), LatencyTable.load(v2, statistic="p99")
    cfg = med.space.smallest()
    v = Variant(name="s", arch=str(cfg), precision="fp32", predicted_latency_ms=1.0, accuracy=0.5,
                model_path=tiny_variants[0].model_path)
    b = build_bundle([v], tmp_path / "b", tables={"median": med, "tail": p99}, default_table="tail")
    assert b.entries[0].predicted_latency_ms["tail"] == pytest.approx(p99.sum_ms(cfg))
    assert b.entries[0].predicted_latency_ms["tail"] > b.entries[0].predicted_latency_ms["median"]
    assert b.tables["tail"]["statistic"] == "p99" and b.tables["median"]["statistic"] == "median"
    assert load_bundle(tmp_path / "b").variants()[0].predicted_latency_ms == pytest.approx(p99.sum_ms(cfg))


def test_adapted_predictor_column_prices_variants_for_a_new_device(tmp_path: Path,
                                                                    tiny_variants: tuple[Variant, ...]) -> None:
    """A phone known from a few measurements (hwnas lut adapt) gives the bundle a latency column the agent can use."""
    import numpy as np

    from latency_tables import LatencyTable
    from latency_tables.fewshot import adapt, load_source

    table = LatencyTable.load(FIXTURE_TABLE)
    src = load_source(FIXTURE_TABLE)
    rng = np.random.default_rng(0)
    archs = list({str(a): a for a in (table.space.canonical(table.space.sample(rng)) for _ in range(30))}.values())[:6]
    phone = adapt(archs, 4.0 * src.predict(archs), space=table.space,
                  backbone=Backbone.from_json(table.meta.backbone), sources=[src], device="phone-x")
    path = phone.save(tmp_path / "phone.json")
    arch = table.space.smallest()
    v = Variant(name="s", arch=str(arch), precision="fp32", predicted_latency_ms=1.0, accuracy=0.5,
                model_path=tiny_variants[0].model_path)
    b = build_bundle([v], tmp_path / "b", tables={"phone": str(path)}, default_table="phone")
    assert b.entries[0].predicted_latency_ms["phone"] == pytest.approx(4.0 * table.sum_ms(arch), rel=0.01)
    assert b.tables["phone"]["source"] == "adapted predictor" and b.tables["phone"]["device"] == "phone-x"
    assert load_bundle(tmp_path / "b").variants()[0].predicted_latency_ms == pytest.approx(4.0 * table.sum_ms(arch),
                                                                                         rel=0.01)
