from __future__ import annotations

import pytest
import torch

from supernet.data import load_dataset
from supernet.evaluate import evaluate, recalibrate_bn
from supernet.space import get_space
from supernet.train import (
    TrainConfig,
    distillation_losses,
    get_schedule,
    load_supernet,
    phase_epochs,
    sample_phase_subnet,
    train_supernet,
)

TINY = TrainConfig(dataset="digits", epochs=2, batch_size=32, max_train_images=128, width_mult=0.25,
                   checkpoint_every_steps=2, eval_bn_images=64, warmup_steps=2, seed=3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=TINY.seed, max_train=TINY.max_train_images)


def test_kill_and_resume_reaches_the_same_weights(tmp_path, digits) -> None:
    full = train_supernet(TINY, out_dir=tmp_path / "a", data=digits, progress=False)
    # "kill" after 3 steps (mid-epoch), then re-run the same call twice more
    part = train_supernet(TINY, out_dir=tmp_path / "b", data=digits, progress=False, stop_after_steps=3)
    assert part.supernet_path == ""
    part2 = train_supernet(TINY, out_dir=tmp_path / "b", data=digits, progress=False, stop_after_steps=2)
    assert part2.resumed_from_step == 3
    resumed = train_supernet(TINY, out_dir=tmp_path / "b", data=digits, progress=False)
    assert resumed.resumed_from_step == 5
    a = load_supernet(full.supernet_path).state_dict()
    b = load_supernet(resumed.supernet_path).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert [p.name for p in full.phases] == ["full", "elastic"]


def test_training_learns_something(tmp_path, digits) -> None:
    cfg = TrainConfig(dataset="digits", epochs=4, batch_size=32, max_train_images=None, width_mult=0.25,
                      eval_bn_images=256, warmup_steps=5, seed=0)
    data = load_dataset("digits", seed=0)
    res = train_supernet(cfg, out_dir=tmp_path, data=data, progress=False)
    net = load_supernet(res.supernet_path)
    space = get_space("mnist")
    top1 = evaluate(net, space.largest(), data, split="val", bn_images=256).top1
    assert top1 > 0.5, f"largest subnet val top-1 {top1:.3f} after 4 epochs on digits (chance is 0.1)"


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


def test_kd_loss_is_zero_for_identical_logits_and_scales_with_t2() -> None:
    kd = distillation_losses["kl"]
    z = torch.randn(8, 10)
    assert kd(z, z, temperature=2.0).abs() < 1e-6
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    manual = (torch.softmax(t, 1) * (torch.log_softmax(t, 1) - torch.log_softmax(s, 1))).sum(1).mean()
    torch.testing.assert_close(kd(s, t, temperature=1.0), manual)


def test_schedule_helpers() -> None:
    space = get_space("mnist")
    phases = get_schedule("progressive-shrinking", space)
    assert [p.name for p in phases] == ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    assert sum(phase_epochs(phases, 20)) == 20 and min(phase_epochs(phases, 6)) >= 1
    import numpy as np

    rng = np.random.default_rng(0)
    kernel_phase = phases[1]
    for _ in range(20):
        c = sample_phase_subnet(space, kernel_phase, rng, resolution=28)
        assert c.depths == (4,) * 5 and set(c.expand_ratios) == {6}
    with pytest.raises(KeyError, match="known"):
        get_schedule("nope", space)


def test_recalibrate_bn_needs_batches() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])
    x = torch.randn(16, 1, 4, 4) * 3 + 1
    recalibrate_bn(model, [x])
    y = model[0](x)
    torch.testing.assert_close(model[1].running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
