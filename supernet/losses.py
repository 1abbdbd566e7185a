"""Distillation losses for supernet training: two registries, one for logits and one for feature maps.

Notation
--------
z_s, z_t: student / teacher logits (B, K); T: temperature; p = softmax(z_t / T) (teacher),
q = softmax(z_s / T) (student). F_s, F_t: student / teacher feature maps (B, C, H, W) of the same stage.

Logit losses (`distillation_losses`, called as ``fn(z_s, z_t, *, temperature, **options)``; batch mean; the
teacher side never receives a gradient):

``kl``
    T^2 * KL(p || q) (Hinton et al. 2015; OFA's KD with T = 1).
``alpha-divergence``
    AlphaNet's adaptive alpha-divergence (Wang et al. 2021, arXiv 2102.07954). For one alpha,
    D_a(p || q) = 1 / (a (a - 1)) * sum_k q_k [ (p_k / q_k)^a - 1 ], which is KL(p || q) at a = 1 and KL(q || p)
    at a = 0. Per example the larger of D_{alpha_min} and D_{alpha_max} is used (it penalises both
    over- and under-estimating the teacher's uncertainty). The gradient is the paper's clipped estimator:
    with w = (p / q)^a clipped to [0, clip] the surrogate is -sum_k q_k * (w_k / a + 1 / (a (a - 1))) * log q_k
    with q_k detached, i.e. exactly grad D_a when no ratio is clipped. The returned *value* is the (clipped)
    divergence itself, so logs show a divergence; only its gradient is the surrogate's. Scaled by T^2 like KL.

Feature losses (`feature_losses`, called as ``fn(F_s, F_t)``): the supernet's stage outputs have the same
channels and size for every subnet and the teacher (OFA MobileNetV3 has no elastic width), so no learned
regressor is needed and no extra trainable state has to be checkpointed.

``hint``
    FitNets (Romero et al. 2015) hint on a stage output: mean squared error between F_s and F_t.
``attention``
    Attention transfer (Zagoruyko & Komodakis 2017): with A(F) = vec(mean_c F^2) / ||vec(mean_c F^2)||_2,
    the loss is mean_b || A(F_s) - A(F_t) ||_2.

Registries are plain dicts from name to function so that a new loss is one entry, never a new branch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from supernet.registry import Registry

__all__ = [
    "DistillationLoss",
    "FeatureLoss",
    "alpha_divergence",
    "attention_transfer",
    "check_options",
    "distillation_losses",
    "feature_losses",
    "hint_loss",
    "kl_distillation",
]


class DistillationLoss(Protocol):
    """``(student_logits (B, K), teacher_logits (B, K), *, temperature > 0, **options) -> scalar``.

    The teacher logits are treated as constants (callers pass them detached; implementations must not need
    their gradient). Options are keyword-only and have defaults, so ``check_options`` can validate them.
    """

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, *, temperature: float,
                 **options: Any) -> torch.Tensor: ...


class FeatureLoss(Protocol):
    """``(student_features (B, C, H, W), teacher_features (B, C, H, W)) -> scalar``; teacher detached."""

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor: ...


# --------------------------------------------------------------------------- logits
def kl_distillation(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), batch mean (Hinton et al. 2015)."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher.detach() / t, dim=1), log_target=True,
        reduction="batchmean",
    ) * (t * t)


def _alpha_terms(log_q: torch.Tensor, log_p: torch.Tensor, alpha: float, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (clipped divergence value, surrogate whose gradient is the clipped gradient) for one alpha."""
    q = log_q.exp().detach()
    log_ratio = (log_p - log_q).detach()  # log(p / q), constant for the gradient
    if abs(alpha) < 1e-3:  # a -> 0: KL(q || p)
        ratio = log_ratio.exp().clamp(0.0, clip)
        f = -ratio.log()
        value = (q * f).sum(1)
        rho = ratio.log() - 1.0
    elif abs(alpha - 1.0) < 1e-3:  # a -> 1: KL(p || q)
        ratio = log_ratio.exp()
        value = (q * ratio * log_ratio).sum(1)
        rho = ratio
    else:
        w = (alpha * log_ratio).exp().clamp(0.0, clip)
        base = 1.0 / (alpha * (alpha - 1.0))
        value = (q * (w - 1.0)).sum(1) * base
        rho = w / alpha + base
    surrogate = -(q * rho * log_q).sum(1)
    return value, surrogate


def alpha_divergence(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    temperature: float = 1.0,
    alpha_min: float = -1.0,
    alpha_max: float = 1.0,
    clip: float = 5.0,
) -> torch.Tensor:
    """AlphaNet's adaptive, clipped alpha-divergence (see the module docstring); defaults are the paper's."""
    if not alpha_min <= alpha_max:
        raise ValueError(f"alpha-divergence: alpha_min {alpha_min} must be <= alpha_max {alpha_max}")
    if not clip > 0:
        raise ValueError(f"alpha-divergence: clip must be > 0, got {clip}")
    t = temperature
    log_q = F.log_softmax(student / t, dim=1)
    log_p = F.log_softmax(teacher.detach() / t, dim=1)
    v_lo, s_lo = _alpha_terms(log_q, log_p, float(alpha_min), clip)
    v_hi, s_hi = _alpha_terms(log_q, log_p, float(alpha_max), clip)
    pick_lo = v_lo > v_hi
    value = torch.where(pick_lo, v_lo, v_hi)
    surrogate = torch.where(pick_lo, s_lo, s_hi)
    # value of `value`, gradient of `surrogate`
    per_example = value.detach() + surrogate - surrogate.detach()
    return per_example.mean() * (t * t)


distillation_losses: Registry[Callable[..., torch.Tensor]] = Registry("distillation loss")
distillation_losses.add("kl", kl_distillation)
distillation_losses.add("alpha-divergence", alpha_divergence)


# --------------------------------------------------------------------------- features
def hint_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNets hint: mean squared error between same-shaped stage outputs."""
    return F.mse_loss(student, teacher.detach())


def _attention_map(feat: torch.Tensor) -> torch.Tensor:
    return F.normalize(feat.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Attention transfer: L2 distance between normalised spatial attention maps, batch mean."""
    return (_attention_map(student) - _attention_map(teacher.detach())).norm(p=2, dim=1).mean()


feature_losses: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("feature loss")
feature_losses.add("hint", hint_loss)
feature_losses.add("attention", attention_transfer)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError unless every key of ``options`` is a keyword option of distillation loss ``name``."""
    if name not in distillation_losses:
        raise ValueError(f"kd_loss {name!r}: known {sorted(distillation_losses)}")
    params = inspect.signature(distillation_losses[name]).parameters
    allowed = sorted(k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "temperature")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"kd_options {unknown} are not options of kd_loss {name!r}; its options: {allowed}")
