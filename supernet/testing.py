"""Search-space, supernet and quantization-target contracts as reusable pytest suites (as `optuna.testing`).

A test module gets every check for every registered implementation by parametrizing one subclass::

    @pytest.mark.parametrize("space_name", list_spaces())
    class TestSpaces(SpaceContract, ModelContract):
        pass

    @pytest.mark.parametrize("target_name", list(BACKENDS))
    class TestTargets(QuantTargetContract):      # also needs a ``quant_setup`` fixture, see the class
        pass

Space: ``decode(encode(c)) == canonical(c)`` for every encoding, JSON and string round trips, seeded sampling
gives canonical configs. Model (per space, a small randomised supernet): the forward under ``activate(cfg)``
equals the forward of ``get_active_subnet(cfg)``; the static model has one layer per `layer_specs` entry
(``sum(depths) + 4``). Quantization target (`supernet.quantize.QuantTarget`): the fp32 file matches torch, and
the file lowered to each precision runs and agrees with fp32 on top-1 within `QuantTargetContract.agreement`.
Needs pytest (the ``[dev]`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from supernet.layers import Backbone, StaticSubnet, build_static_model, layer_specs
from supernet.model import OFASupernet
from supernet.quantize import QuantConfig, get_target
from supernet.space import PRECISIONS, ArchConfig, EncodingKind, SearchSpace, get_space

__all__ = ["ModelContract", "QuantTargetContract", "SpaceContract", "randomised_supernet", "small_configs"]

ENCODINGS: tuple[EncodingKind, ...] = ("ordinal", "onehot")


def small_configs(space: SearchSpace, n: int, *, seed: int = 0) -> list[ArchConfig]:
    """The smallest and largest configs at the space's smallest resolution, then ``n`` seeded samples there."""
    rng = np.random.default_rng(seed)
    res = min(space.resolutions)
    samples = [space.canonical(ArchConfig(res, c.depths, c.kernel_sizes, c.expand_ratios))
               for c in (space.sample(rng) for _ in range(n))]
    return [space.smallest(resolution=res), space.largest(resolution=res), *samples]


def randomised_supernet(space: SearchSpace, *, in_channels: int = 1, width_mult: float = 0.25,
                        seed: int = 0) -> OFASupernet:
    """A narrow supernet (default width 0.25) whose BN statistics, affine parameters and kernel transforms are not at
    their initial values, so a wrongly copied tensor changes the output; eval mode."""
    torch.manual_seed(seed)
    net = OFASupernet(space=space, backbone=Backbone(in_channels=in_channels, num_classes=10, width_mult=width_mult))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.05 * torch.randn_like(p))
    return net.eval()


class SpaceContract:
    """Checks every registered `SearchSpace` must pass; parametrize a subclass with ``space_name``."""

    n_samples: ClassVar[int] = 100

    def _samples(self, space: SearchSpace, n: int, seed: int = 0) -> list[ArchConfig]:
        rng = np.random.default_rng(seed)
        return [space.sample(rng) for _ in range(n)]

    def test_decode_encode_is_canonical(self, space_name: str) -> None:
        space = get_space(space_name)
        for kind in ENCODINGS:
            for c in self._samples(space, self.n_samples):
                v = space.encode(c, kind)
                assert v.shape == (space.encoding_size(kind),)
                assert space.decode(v, kind) == space.canonical(c)

    def test_json_and_string_roundtrip(self, space_name: str) -> None:
        space = get_space(space_name)
        for c in self._samples(space, self.n_samples):
            assert ArchConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
            assert space.parse(str(c)) == space.canonical(c)
        assert SearchSpace.from_json(space.to_json()) == space

    def test_sample_is_deterministic_and_canonical(self, space_name: str) -> None:
        space = get_space(space_name)
        assert self._samples(space, 20, seed=3) == self._samples(space, 20, seed=3)
        assert self._samples(space, 20, seed=3) != self._samples(space, 20, seed=4)
        for c in self._samples(space, 50):
            assert space.canonical(c) == c


class ModelContract:
    """Supernet invariants for every registered space; parametrize a subclass with ``space_name``."""

    n_configs: ClassVar[int] = 3  # sampled configs besides the smallest and largest (forwards are the cost)

    def test_active_forward_equals_extracted_static_subnet(self, space_name: str) -> None:
        space = get_space(space_name)
        net = randomised_supernet(space)
        for cfg in small_configs(space, self.n_configs):
            x = torch.randn(2, 1, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(1))
            with torch.no_grad(), net.activate(cfg):
                a = net(x)
            with torch.no_grad():
                b = net.get_active_subnet(cfg).eval()(x)
            assert a.abs().max() > 0
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    def test_static_model_has_one_layer_per_spec(self, space_name: str) -> None:
        space = get_space(space_name)
        backbone = Backbone(in_channels=1, num_classes=10, width_mult=0.25)
        for cfg in small_configs(space, self.n_configs):
            specs = layer_specs(backbone, cfg)
            model = build_static_model(backbone, cfg, space=space).eval()
            assert len(model) == len(specs) == sum(cfg.depths) + 4
            with torch.no_grad():
                assert model(torch.zeros(1, 1, cfg.resolution, cfg.resolution)).shape == (1, 10)


class QuantTargetContract:
    """Checks every quantization target (`supernet.quantize.BACKENDS`) must pass.

    Parametrize a subclass with ``target_name`` and provide a fixture ``quant_setup`` returning
    ``(model, calib, xs)``: a small *trained* `StaticSubnet` in eval mode (random nets amplify any quantization
    error), calibration inputs (a list of float32 (N, C, H, W) arrays) and held-out inputs ``xs`` it never saw.
    """

    # minimum share of ``xs`` whose top-1 class equals the fp32 file's, per precision
    agreement: ClassVar[dict[str, float]] = {"fp32": 1.0, "fp16": 0.95, "int8": 0.8}

    def test_fp32_export_matches_torch(self, target_name: str, quant_setup: tuple[StaticSubnet, Any, np.ndarray],
                                       tmp_path: Path) -> None:
        model, _, xs = quant_setup
        target = get_target(target_name)
        fp32 = target.export_fp32(model, tmp_path / f"fp32{target.suffix}")
        got = target.runner(fp32)(xs)
        with torch.no_grad():
            ref = model(torch.from_numpy(xs)).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))

    def test_every_precision_runs_and_agrees_with_fp32(self, target_name: str,
                                                       quant_setup: tuple[StaticSubnet, Any, np.ndarray],
                                                       tmp_path: Path) -> None:
        model, calib, xs = quant_setup
        target = get_target(target_name)
        assert target.environment()["backend_version"]
        fp32 = target.export_fp32(model, tmp_path / f"fp32{target.suffix}")
        ref = target.runner(fp32)(xs)
        for precision in PRECISIONS:
            out = target.lower(fp32, tmp_path / f"{precision}{target.suffix}",
                               config=QuantConfig(precision=precision, calib_images=sum(len(c) for c in calib)),
                               calib_batches=calib if precision == "int8" else None)
            got = target.runner(out)(xs)
            assert got.shape == ref.shape and np.isfinite(got).all(), precision
            agree = float((got.argmax(1) == ref.argmax(1)).mean())
            assert agree >= self.agreement[precision], (precision, agree)
            dtypes = target.weight_dtypes(out)
            expected = {"fp32": "float32", "fp16": "float16", "int8": "int8"}[precision]
            assert max(dtypes, key=lambda k: dtypes[k]) == expected, (precision, dtypes)
