"""Test-wide settings: one torch thread (a shared 2-core VM makes multi-threaded torch erratic), offline."""

from __future__ import annotations

import torch

torch.set_num_threads(1)


import pytest


@pytest.fixture(autouse=True, scope="session")
def _model_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Exported models go to a per-session cache, never the user's ~/.cache (latency_tables.model_cache)."""
    import os

    os.environ["HWNAS_MODEL_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
