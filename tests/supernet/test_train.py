"""Supernet training: schedules and recipes, exact kill-and-resume, learning, distillation paths.

Everything trains on 64-128 digits images at width 0.25 with batches of 16, a few seconds per run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from supernet.data import load_dataset
from supernet.evaluate import evaluate, recalibrate_bn
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import get_space
from supernet.train import (
    RECIPES,
    Phase,
    TrainConfig,
    _kept_expands,
    _step_subnets,
    distillation_losses,
    get_schedule,
    load_supernet,
    phase_epochs,
    sample_phase_subnet,
    train_supernet,
)

SPACE = get_space("mnist")
ALL = {"kernels": SPACE.kernel_choices, "depths": SPACE.depth_choices, "expands": SPACE.expand_choices}
# full network, then everything elastic with teacher KD, a feature loss and channel sorting
TINY_PHASES = (
    Phase(name="full", epochs_frac=1, lr=0.05, distill=False),
    Phase(name="elastic", epochs_frac=1, lr=0.05, subnets_per_step=2, sort_channels=True, **ALL),
)
TINY = TrainConfig(dataset="digits", epochs=2, batch_size=16, max_train_images=64, width_mult=0.25,
                   phases=TINY_PHASES, feature_loss="attention", checkpoint_every_steps=2, eval_bn_images=32,
                   warmup_steps=2, seed=3)


@pytest.fixture(scope="module")
def digits():
    # a 90-image val split keeps the per-phase evaluations cheap
    return load_dataset("digits", seed=TINY.seed, max_train=TINY.max_train_images, val_fraction=0.05)


def _assert_same_weights(path_a: str, path_b: str) -> None:
    a, b = load_supernet(path_a).state_dict(), load_supernet(path_b).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_kill_and_resume_reaches_the_same_weights(tmp_path, digits) -> None:
    full = train_supernet(TINY, out_dir=tmp_path / "a", data=digits, progress=False)
    # "kill" after 3 steps (mid-epoch of the first phase), then after 2 more (into the KD + feature phase)
    part = train_supernet(TINY, out_dir=tmp_path / "b", data=digits, progress=False, stop_after_steps=3)
    assert part.supernet_path == ""
    part2 = train_supernet(TINY, out_dir=tmp_path / "b", data=digits, progress=False, stop_after_steps=3)
    assert part2.resumed_from_step == 3
    resumed = train_supernet(TINY, out_dir=tmp_path / "b", data=digits, progress=False)
    assert resumed.resumed_from_step == 6
    _assert_same_weights(full.supernet_path, resumed.supernet_path)
    assert [p.name for p in full.phases] == [p.name for p in resumed.phases] == ["full", "elastic"]
    assert full.rank_state_sha256 == resumed.rank_state_sha256 and len(full.rank_state_sha256) == 1


def test_bignas_recipe_resumes_exactly(tmp_path, digits) -> None:
    """In-place distillation with the alpha-divergence: 4 subnets per step, the largest is the teacher."""
    cfg = TINY.with_recipe("bignas")
    cfg = TrainConfig(**{**cfg.to_json(), "epochs": 1, "feature_loss": None, "checkpoint_every_steps": 0})
    assert cfg.kd_loss == "alpha-divergence" and cfg.schedule == "bignas"
    full = train_supernet(cfg, out_dir=tmp_path / "a", data=digits, progress=False)
    train_supernet(cfg, out_dir=tmp_path / "b", data=digits, progress=False, stop_after_steps=2)
    resumed = train_supernet(cfg, out_dir=tmp_path / "b", data=digits, progress=False)
    _assert_same_weights(full.supernet_path, resumed.supernet_path)
    (summary,) = full.phases
    assert summary.name == "sandwich" and np.isfinite(summary.mean_loss)


def test_training_learns_something(tmp_path) -> None:
    """The smallest subnet alone, 80 steps on 256 digits: far above chance (0.1) unless training is broken.

    (128 images gave val top-1 0.25 on one CPU, 0.3 on another: too close to any threshold; 256 give 0.58.)"""
    data = load_dataset("digits", seed=0, max_train=256)
    smallest = Phase(name="smallest", epochs_frac=1, lr=0.05, kernels=(3,), depths=(2,), expands=(3,),
                     distill=False)
    cfg = TrainConfig(dataset="digits", epochs=5, batch_size=16, max_train_images=256, width_mult=0.25,
                      phases=(smallest,), eval_bn_images=64, warmup_steps=2, checkpoint_every_steps=0, seed=0)
    res = train_supernet(cfg, out_dir=tmp_path, data=data, progress=False)
    net = load_supernet(res.supernet_path)
    before = evaluate(OFASupernet(space=SPACE, backbone=net.backbone), SPACE.smallest(), data, bn_images=64).top1
    top1 = evaluate(net, SPACE.smallest(), data, split="val", bn_images=64).top1
    assert top1 > 0.35 and top1 > before + 0.15, f"smallest subnet val top-1 {top1:.3f} (untrained {before:.3f})"


def test_changed_config_refuses_to_resume(tmp_path, digits) -> None:
    train_supernet(TINY, out_dir=tmp_path, data=digits, progress=False, stop_after_steps=1)
    other = TrainConfig(**{**TINY.to_json(), "kd_temperature": 4.0})
    with pytest.raises(ValueError, match="different training config"):
        train_supernet(other, out_dir=tmp_path, data=digits, progress=False)


def test_load_supernet_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_supernet(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        load_supernet(bad)


def test_kd_loss_registry_is_importable_from_train() -> None:
    kd = distillation_losses["kl"]
    z = torch.randn(8, 10)
    assert kd(z, z, temperature=2.0).abs() < 1e-6
    assert {"kl", "alpha-divergence"} <= set(distillation_losses)


def test_progressive_shrinking_follows_ofa() -> None:
    phases = get_schedule("progressive-shrinking", SPACE)
    assert [p.name for p in phases] == ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    # elastic dimensions only accumulate, in OFA's order: kernel, then depth, then expand
    assert [p.kernels for p in phases] == [None] + [SPACE.kernel_choices] * 5
    assert [p.depths for p in phases] == [None, None, (3, 4), (2, 3, 4), (2, 3, 4), (2, 3, 4)]
    assert [p.expands for p in phases] == [None] * 4 + [(4, 6), (3, 4, 6)]
    assert [p.subnets_per_step for p in phases] == [1, 1, 2, 2, 4, 4]
    assert [p.distill for p in phases] == [False] + [True] * 5
    assert [p.sort_channels for p in phases] == [False] * 4 + [True, True]
    # the second expand phase keeps the channels the first one trained for expand 4
    assert _kept_expands(phases, 4, SPACE) == () and _kept_expands(phases, 5, SPACE) == (4,)
    assert sum(phase_epochs(phases, 20)) == 20 and min(phase_epochs(phases, 6)) >= 1
    assert phase_epochs([Phase(name=str(e), epochs_frac=e, lr=0.1, distill=False) for e in (3, 1, 7)], 11) == [3, 1, 7]
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = sample_phase_subnet(SPACE, phases[1], rng, resolution=28)
        assert c.depths == (4,) * 5 and set(c.expand_ratios) == {6}
    with pytest.raises(KeyError, match="known"):
        get_schedule("nope", SPACE)


def test_sandwich_puts_largest_first_then_smallest() -> None:
    (phase,) = get_schedule("bignas", SPACE)
    assert phase.inplace_distill and not phase.distill
    cfgs = _step_subnets(SPACE, phase, np.random.default_rng(1), 28)
    assert len(cfgs) == 4
    assert cfgs[0] == SPACE.largest(resolution=28) and cfgs[1] == SPACE.smallest(resolution=28)


def test_recipes_and_config_validation() -> None:
    for name, spec in RECIPES.items():
        cfg = TrainConfig().with_recipe(name)
        assert cfg.schedule == spec["schedule"] and cfg.kd_loss == spec["kd_loss"]
        cfg.resolved_phases(SPACE)
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainConfig().with_recipe("nope")
    with pytest.raises(ValueError, match="not options of kd_loss 'kl'"):
        TrainConfig(kd_options={"alpha_min": -1.0})
    with pytest.raises(ValueError, match="feature_loss"):
        TrainConfig(feature_loss="fitnet")
    with pytest.raises(ValueError, match="inplace_distill needs sandwich"):
        Phase(name="x", epochs_frac=1, lr=0.1, distill=False, inplace_distill=True)
    with pytest.raises(ValueError, match="phase 0"):
        TrainConfig(phases=(Phase(name="x", epochs_frac=1, lr=0.1),)).resolved_phases(SPACE)
    with pytest.raises(ValueError, match="kernels \\[9\\] not in space"):
        TrainConfig(phases=(Phase(name="x", epochs_frac=1, lr=0.1, distill=False, kernels=(9,)),)).resolved_phases(SPACE)
    # JSON round trip (what the checkpoint compares on resume)
    assert TrainConfig.from_json(TINY.to_json()) == TINY


def test_sort_channels_keeps_trained_expand_prefix() -> None:
    torch.manual_seed(0)
    net = OFASupernet(space=SPACE, backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25))
    block = net.blocks[1]
    with torch.no_grad():
        block.pl_conv.weight.copy_(torch.rand_like(block.pl_conv.weight))
    w4 = 4 * block.in_ch  # expand-4 width (a multiple of 8 here)
    before = block.pl_conv.weight.clone()
    net.sort_channels(keep_expands=(4,))
    after = block.pl_conv.weight
    # the same set of channels inside the expand-4 prefix, sorted within it; the same outside it
    key = lambda w: sorted(w.abs().sum(dim=(0, 2, 3)).tolist())
    assert key(after[:, :w4]) == pytest.approx(key(before[:, :w4]))
    assert key(after[:, w4:]) == pytest.approx(key(before[:, w4:]))
    imp = after[:, :w4].abs().sum(dim=(0, 2, 3))
    assert bool((imp[:-1] >= imp[1:]).all())


def test_recalibrate_bn_needs_batches() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])
    x = torch.randn(16, 1, 4, 4) * 3 + 1
    recalibrate_bn(model, [x])
    y = model[0](x)
    torch.testing.assert_close(model[1].running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
