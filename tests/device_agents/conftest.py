from __future__ import annotations

from pathlib import Path

import pytest
from agents_helpers import fake_sysfs

from device_agents import Variant, example_variants


@pytest.fixture
def variants() -> tuple[Variant, ...]:
    return example_variants()


@pytest.fixture
def fake_tree(tmp_path: Path) -> tuple[Path, Path]:
    return fake_sysfs(tmp_path)
