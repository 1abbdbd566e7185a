"""Distillation loss registries: one contract suite over every registered loss, plus each loss's own math."""

from __future__ import annotations

import pytest
import torch

from supernet.layers import Backbone
from supernet.losses import (
    alpha_divergence,
    attention_transfer,
    check_options,
    distillation_losses,
    feature_losses,
    hint_loss,
    kl_distillation,
)
from supernet.model import OFASupernet
from supernet.space import get_space


def _logits(seed: int, n: int = 6, k: int = 10) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("name", sorted(distillation_losses))
def test_logit_loss_contract(name: str) -> None:
    fn = distillation_losses[name]
    z = _logits(0)
    s = z.clone().requires_grad_(True)
    same = fn(s, z, temperature=2.0)
    assert same.ndim == 0 and abs(float(same.detach())) < 1e-5
    same.backward()
    assert s.grad is not None and float(s.grad.abs().max()) < 1e-5  # minimum at the teacher
    s2, t = _logits(1).requires_grad_(True), _logits(2).requires_grad_(True)
    loss = fn(s2, t, temperature=1.0)
    assert float(loss.detach()) > 0
    loss.backward()
    assert t.grad is None or float(t.grad.abs().max()) == 0  # the teacher is a constant
    assert float(s2.grad.abs().max()) > 0
    check_options(name, {})


@pytest.mark.parametrize("name", sorted(feature_losses))
def test_feature_loss_contract(name: str) -> None:
    fn = feature_losses[name]
    f = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    assert abs(float(fn(f, f))) < 1e-6
    s = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    t = f.clone().requires_grad_(True)
    loss = fn(s, t)
    assert loss.ndim == 0 and float(loss.detach()) > 0
    loss.backward()
    assert t.grad is None and float(s.grad.abs().max()) > 0


def test_kl_matches_manual_and_scales_with_t2() -> None:
    s, t = _logits(3), _logits(4)
    manual = (torch.softmax(t, 1) * (torch.log_softmax(t, 1) - torch.log_softmax(s, 1))).sum(1).mean()
    torch.testing.assert_close(kl_distillation(s, t, temperature=1.0), manual)
    manual4 = (torch.softmax(t / 4, 1) * (torch.log_softmax(t / 4, 1) - torch.log_softmax(s / 4, 1))).sum(1).mean()
    torch.testing.assert_close(kl_distillation(s, t, temperature=4.0), 16 * manual4)


def _true_alpha_div(s: torch.Tensor, t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-example D_a(p || q) = 1/(a(a-1)) sum q ((p/q)^a - 1), differentiable in s (no clipping)."""
    log_q, log_p = torch.log_softmax(s, 1), torch.log_softmax(t, 1)
    return ((alpha * log_p + (1 - alpha) * log_q).exp().sum(1) - 1) / (alpha * (alpha - 1))


@pytest.mark.parametrize("alpha", [-1.0, -0.5, 0.5, 2.0])
def test_alpha_divergence_value_and_gradient_without_clipping(alpha: float) -> None:
    s, t = _logits(5).requires_grad_(True), _logits(6)
    got = alpha_divergence(s, t, alpha_min=alpha, alpha_max=alpha, clip=1e9)
    (g_got,) = torch.autograd.grad(got, s)
    s2 = s.detach().clone().requires_grad_(True)
    want = _true_alpha_div(s2, t, alpha).mean()
    (g_want,) = torch.autograd.grad(want, s2)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)


def test_alpha_divergence_limits_are_the_two_kls() -> None:
    s, t = _logits(7), _logits(8)
    kl_pq = kl_distillation(s, t)  # alpha = 1
    kl_qp = kl_distillation(t, s)  # alpha = 0: KL(q || p)
    torch.testing.assert_close(alpha_divergence(s, t, alpha_min=1.0, alpha_max=1.0, clip=1e9), kl_pq)
    torch.testing.assert_close(alpha_divergence(s, t, alpha_min=0.0, alpha_max=0.0, clip=1e9), kl_qp)


def test_adaptive_alpha_takes_the_larger_divergence_per_example() -> None:
    s, t = _logits(9), _logits(10)
    lo = _true_alpha_div(s, t, -1.0)
    hi = _true_alpha_div(s, t, 0.5)
    want = torch.maximum(lo, hi).mean()
    torch.testing.assert_close(alpha_divergence(s, t, alpha_min=-1.0, alpha_max=0.5, clip=1e9), want)


def test_clipping_bounds_the_gradient() -> None:
    # a confident teacher on a class the student thinks impossible: p/q is huge
    t = torch.tensor([[10.0, 0.0, 0.0]])
    s = torch.tensor([[-10.0, 5.0, 0.0]], requires_grad=True)
    (g_clipped,) = torch.autograd.grad(alpha_divergence(s, t, alpha_min=0.5, alpha_max=0.5, clip=5.0), s)
    (g_free,) = torch.autograd.grad(alpha_divergence(s, t, alpha_min=0.5, alpha_max=0.5, clip=1e9), s)
    assert float(g_clipped.abs().max()) < float(g_free.abs().max())
    assert torch.isfinite(g_clipped).all()


def test_options_are_checked_by_name() -> None:
    check_options("alpha-divergence", {"alpha_min": -1.0, "alpha_max": 1.0, "clip": 5.0})
    with pytest.raises(ValueError, match="its options: \\['alpha_max', 'alpha_min', 'clip'\\]"):
        check_options("alpha-divergence", {"beta": 1.0})
    with pytest.raises(ValueError, match="known"):
        check_options("mse", {})
    with pytest.raises(ValueError, match="alpha_min"):
        alpha_divergence(_logits(0), _logits(1), alpha_min=1.0, alpha_max=-1.0)


def test_hint_and_attention_values() -> None:
    s, t = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    assert float(hint_loss(s, t)) == pytest.approx(1.0)
    # attention maps ignore the scale of the features
    assert float(attention_transfer(3 * s, s)) == pytest.approx(0.0, abs=1e-6)


def test_forward_features_matches_forward_and_has_stage_shapes() -> None:
    space = get_space("mnist")
    torch.manual_seed(0)
    net = OFASupernet(space=space, backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25)).eval()
    x = torch.randn(2, 1, 28, 28)
    for cfg in (space.largest(resolution=28), space.smallest(resolution=28)):
        with torch.no_grad(), net.activate(cfg):
            logits, feats = net.forward_features(x, (1, 4))
            torch.testing.assert_close(logits, net(x))
        assert sorted(feats) == [1, 4]
        assert feats[1].shape == (2, net.backbone.ch(40), 4, 4)  # 28 -> 14 -> 7 -> 4 after stage 1
        assert feats[4].shape[1] == net.backbone.ch(160)
