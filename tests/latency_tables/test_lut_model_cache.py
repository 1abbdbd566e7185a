"""The content-addressed model cache: reused across builds, validations and kits; keyed by everything that changes
the file; safe against concurrent writers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from lut_helpers import FAKE_PROTOCOL  # type: ignore[import-not-found]

from latency_tables.backends import create_backend
from latency_tables.model_cache import content_of_layer, content_of_subnet, open_cache
from latency_tables.table import build_table, layer_entry, measure_models, prepare_items
from supernet.layers import Backbone, LayerSpec
from supernet.space import SearchSpace

SPACE = SearchSpace(name="cache-test", resolutions=(24,), depth_choices=(1,), kernel_choices=(3, 5), expand_choices=(3,))
BB = Backbone(in_channels=1, num_classes=10, width_mult=0.5)


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_second_build_of_the_same_layers_converts_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_table(SPACE, BB, out=tmp_path / "a.csv", backend="fake", protocol=FAKE_PROTOCOL, progress=False,
                model_cache=cache)
    first = _files(cache)
    assert len(first) > 5
    t = build_table(SPACE, BB, out=tmp_path / "b.csv", backend="fake", protocol=FAKE_PROTOCOL, progress=False,
                    model_cache=cache, keep_artifacts=True)
    assert _files(cache) == first  # same files, none rewritten
    assert not list((tmp_path / ".b.csv.work").glob("*.json"))  # nothing exported into the build's own folder
    assert t.meta.environment["model_cache"] == str(cache)
    # another precision is another file: never handed to the wrong measurement
    build_table(SPACE, BB, out=tmp_path / "c.csv", backend="fake", precision="int8", protocol=FAKE_PROTOCOL,
                progress=False, model_cache=cache)
    assert len(_files(cache)) == 2 * len(first)


def test_validation_subnets_are_cached_with_their_backbone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    archs = [SPACE.smallest(), SPACE.largest()]
    measure_models(archs, BB, backend="fake", protocol=FAKE_PROTOCOL, model_cache=cache)
    n = len(_files(cache))
    measure_models(archs, BB, backend="fake", protocol=FAKE_PROTOCOL, model_cache=cache)
    assert len(_files(cache)) == n
    wide = Backbone(in_channels=1, num_classes=10, width_mult=1.0)  # same arch strings, other widths
    measure_models(archs, wide, backend="fake", protocol=FAKE_PROTOCOL, model_cache=cache)
    assert len(_files(cache)) == n + 2
    assert content_of_subnet("a", BB.to_json()) != content_of_subnet("a", wide.to_json())


def test_cache_key_covers_backend_lowering_and_converters(tmp_path: Path) -> None:
    c = open_cache(tmp_path)
    assert c is not None
    k = content_of_layer("stem:x")
    base = c.key(k, backend="tflite", lowering={"precision": "fp32", "threads": 1})
    assert base == c.key(k, backend="tflite", lowering={"precision": "fp32", "threads": 4})  # threads: same file
    assert base != c.key(k, backend="tflite", lowering={"precision": "int8"})
    assert base != c.key(k, backend="onnxruntime", lowering={"precision": "fp32"})
    assert base != c.key(content_of_layer("stem:y"), backend="tflite", lowering={"precision": "fp32"})


def test_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_MODEL_CACHE", "off")
    assert open_cache() is None


def test_concurrent_writers_leave_one_whole_file(tmp_path: Path) -> None:
    cache = open_cache(tmp_path / "cache")
    be = create_backend("fake")
    spec = LayerSpec("mbconv", 12, 8, 8, kernel=3, stride=1, expand=3, mid_ch=24, se=False, act="relu")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            prepare_items([layer_entry(spec)], be, tmp_path / "w", backend_spec=("fake", {"precision": "fp32"}),
                           cache=cache)
        except BaseException as e:  # noqa: BLE001 - collected for the assert
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 1 and json.loads(files[0].read_text())["macs"] > 0  # no temporary file left behind
