"""The timing-backend contract as a reusable pytest suite (as `optuna.testing` ships its sampler tests).

A test module gets every check for every registered backend by parametrizing one subclass::

    @pytest.mark.parametrize("name", list_backends())
    class TestBackends(BackendContract):
        pass

Contract (`latency_tables.backends.Backend`): a backend created with ``threads`` and ``precision`` reports them,
its name and a version, and the environment keys tables record; ``prepare`` gives a `Prepared` for the input
shape; ``time_runs(prepared, n)`` returns ``n`` finite positive seconds; a backend with an artifact format
exports a file that ``load`` reads back under a key; ``threads < 1`` is refused naming ``threads``. Needs pytest
(the ``[dev]`` extra).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from latency_tables.backends import Backend, Prepared, create_backend
from supernet.layers import LayerSpec, build_layer

__all__ = ["LAYER", "LAYER_INPUT_SHAPE", "BackendContract", "skip_without_converter"]

# one small MBConv with SE: every backend must time it
LAYER = LayerSpec("mbconv", 8, 16, 16, kernel=3, stride=1, expand=3, mid_ch=48, se=True, act="hswish")
LAYER_INPUT_SHAPE = (1, 16, 8, 8)


def skip_without_converter(name: str) -> None:
    """Skip when backend ``name`` cannot export here (TFLite needs the ``[tflite]`` extra's converter)."""
    if name.startswith("tflite") and importlib.util.find_spec("litert_torch") is None:
        pytest.skip("TFLite conversion needs the [tflite] extra (litert-torch)")


class BackendContract:
    """Checks every `Backend` must pass; parametrize a subclass with ``name`` (a registry name)."""

    def test_reports_its_settings_and_times_a_layer(self, name: str, tmp_path: Path) -> None:
        skip_without_converter(name)
        be = create_backend(name, threads=1, precision="fp32")
        assert isinstance(be, Backend)
        assert be.name == name and isinstance(be.version, str) and be.version
        assert be.precision == "fp32" and be.threads == 1
        env = be.environment()
        for key in ("backend", "backend_version", "precision", "threads"):
            assert key in env
        prepared = be.prepare(build_layer(LAYER), LAYER_INPUT_SHAPE, tmp_path)
        assert isinstance(prepared, Prepared) and prepared.input_shape == LAYER_INPUT_SHAPE
        times = be.time_runs(prepared, 4)
        assert isinstance(times, np.ndarray) and times.shape == (4,)
        assert np.all(np.isfinite(times)) and np.all(times > 0)
        if be.artifact_suffix is not None:
            path = be.export(build_layer(LAYER), LAYER_INPUT_SHAPE, tmp_path / f"again{be.artifact_suffix}")
            assert path.exists()
            again = be.load(path, LAYER_INPUT_SHAPE, key="k")
            assert again.key == "k" and be.time_runs(again, 2).shape == (2,)

    def test_rejects_bad_settings(self, name: str) -> None:
        skip_without_converter(name)
        with pytest.raises(ValueError, match="threads"):
            create_backend(name, threads=0)
