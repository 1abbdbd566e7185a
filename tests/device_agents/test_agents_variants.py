from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_agents import InvalidVariantError, Variant, example_variants, load_variants, save_variants
from device_agents.variants import PRECISIONS
from supernet.space import SearchSpace


def test_json_round_trip(variants: tuple[Variant, ...]) -> None:
    for v in variants:
        assert Variant.from_json(v.to_json()) == v


def test_example_bundle_is_valid_and_uses_space_strings(variants: tuple[Variant, ...]) -> None:
    space = SearchSpace()
    assert {v.precision for v in variants} == set(PRECISIONS)
    for v in variants:
        assert str(space.parse(v.arch)) == v.arch
        assert v.name == f"{v.arch}@{v.precision}"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("precision", "int4", "precision"),
        ("predicted_latency_ms", 0.0, "predicted_latency_ms"),
        ("predicted_latency_ms", float("nan"), "predicted_latency_ms"),
        ("accuracy", 76.5, "not percent"),
        ("name", "", "name"),
    ],
)
def test_invalid_fields_are_named(field: str, value: object, words: str) -> None:
    d = example_variants()[0].to_json()
    d[field] = value
    with pytest.raises(InvalidVariantError, match=words):
        Variant.from_json(d)


def test_from_json_rejects_unknown_and_missing_fields() -> None:
    d = example_variants()[0].to_json()
    with pytest.raises(InvalidVariantError, match="unknown field"):
        Variant.from_json({**d, "latency": 3})
    del d["accuracy"]
    with pytest.raises(InvalidVariantError, match="missing field"):
        Variant.from_json(d)


def test_load_save_round_trip(tmp_path: Path, variants: tuple[Variant, ...]) -> None:
    save_variants(variants, tmp_path / "v.json")
    assert load_variants(tmp_path / "v.json") == variants
    (tmp_path / "w.json").write_text(json.dumps({"variants": [v.to_json() for v in variants]}))
    assert load_variants(tmp_path / "w.json") == variants


def test_load_errors_name_file_and_entry(tmp_path: Path, variants: tuple[Variant, ...]) -> None:
    items = [v.to_json() for v in variants[:3]]
    items[2]["precision"] = "bf16"
    (tmp_path / "bad.json").write_text(json.dumps(items))
    with pytest.raises(InvalidVariantError, match=r"bad.json.*entry 2.*precision"):
        load_variants(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text(json.dumps([variants[0].to_json()] * 2))
    with pytest.raises(InvalidVariantError, match="more than once"):
        load_variants(tmp_path / "dup.json")
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(InvalidVariantError, match="expected a JSON list"):
        load_variants(tmp_path / "obj.json")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(InvalidVariantError, match="at least one"):
        load_variants(tmp_path / "empty.json")
