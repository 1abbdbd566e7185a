"""Shared fixtures: small spaces, a fake-backend table built in-process (fast, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lut_helpers import FAKE_PROTOCOL  # type: ignore[import-not-found]

from latency_tables.table import LatencyTable, build_table
from supernet.layers import Backbone
from supernet.space import SearchSpace


@pytest.fixture(scope="session")
def small_space() -> SearchSpace:
    """Two resolutions, two choices per decision: ~60 distinct layers."""
    return SearchSpace(name="lut-test", resolutions=(24, 28), depth_choices=(1, 2), kernel_choices=(3, 5),
                       expand_choices=(3, 6))


@pytest.fixture(scope="session")
def mnist_backbone() -> Backbone:
    return Backbone(in_channels=1, num_classes=10, width_mult=1.0)


@pytest.fixture(scope="session")
def fake_table(tmp_path_factory: pytest.TempPathFactory, small_space: SearchSpace, mnist_backbone: Backbone) -> LatencyTable:
    out = tmp_path_factory.mktemp("fake-lut") / "lut.csv"
    return build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=FAKE_PROTOCOL, progress=False,
                       device="test-device")


@pytest.fixture()
def fake_table_copy(tmp_path: Path, fake_table: LatencyTable) -> Path:
    """A private copy of the fake table's CSV + manifest (tests may corrupt it)."""
    assert fake_table.path is not None
    dst = tmp_path / "lut.csv"
    dst.write_bytes(fake_table.path.read_bytes())
    Path(str(dst) + ".meta.json").write_bytes(Path(str(fake_table.path) + ".meta.json").read_bytes())
    return dst


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
