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


@pytest.fixture(scope="session")
def tiny_variants(tmp_path_factory: pytest.TempPathFactory) -> tuple[Variant, ...]:
    from agents_helpers import tiny_onnx_variants

    return tiny_onnx_variants(tmp_path_factory.mktemp("tiny_models"))
