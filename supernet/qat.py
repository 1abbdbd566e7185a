"""Fake quantization in torch: BN folding, quantization-aware fine-tuning (QAT) and simulated low bit-widths.

Notation (uniform affine quantization, Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference"):

  weights, symmetric:  s_c = max_i |w_{c,i}| / q_max   per output channel c (or one s for the tensor),
                       w_hat = s_c * clamp(round(w / s_c), -q_max, q_max)
  activations, affine: s = (max(x_max, 0) - min(x_min, 0)) / 255, z = round(-128 - x_min / s),
                       x_hat = s * (clamp(round(x / s) + z, -128, 127) - z)

``q_max`` is 127 for 8-bit weights (TFLite's narrow symmetric range, and onnxruntime's symmetric int8),
64 for onnxruntime's ``reduce_range`` (7-bit) weights, and ``2^(b-1) - 1`` for simulated b-bit weights. One bit
(q_max = 0) is binarization, the extreme of the bit-width axis: ``w_hat = alpha_c * sign(w)`` with
``alpha_c = mean_i |w_{c,i}|`` (Rastegari et al. 2016, XNOR-Net; sign(0) = +1), simulated only.
Gradients pass rounding unchanged (straight-through estimator, Bengio et al. 2013): `torch.fake_quantize_*`.

The export path quantizes a *BN-folded* network (onnxruntime's ``quant_pre_process`` and the TFLite converter
both fold BN into the preceding conv: ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta - gamma * mean /
sqrt(var + eps)``), so fake quantization here acts on folded weights too: `fold_batchnorm` first, then
`FakeQuant` on the folded convs. BN statistics are therefore frozen during QAT (the usual last phase of QAT,
Krishnamoorthi 2018, "Quantizing deep convolutional networks for efficient inference: A whitepaper", §3.2).

Activation quantization points: the network input and the output of every Conv2d, Linear, ReLU and Hardswish
module. The exported QDQ / TFLite graphs quantize the same tensors plus the outputs of functional ops (the
residual add, the squeeze-excite multiply) and fuse Conv+ReLU into one quantization; this simulation is
therefore close to the exported model, not bit-exact (`tests/supernet/test_qat.py` bounds the gap).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

if TYPE_CHECKING:
    from supernet.data import DataSplits
    from supernet.layers import StaticSubnet

__all__ = [
    "FakeQuant",
    "FakeQuantSpec",
    "QATConfig",
    "QATResult",
    "describe_spec",
    "fold_batchnorm",
    "qat_finetune",
    "should_run_qat",
    "simulate_quantized",
    "stage_of_layers",
]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=nn.Module)


# --------------------------------------------------------------------------- BN folding
@torch.no_grad()
def fold_batchnorm(model: _M) -> _M:
    """A copy of ``model`` (eval mode) with every BatchNorm2d that directly follows a Conv2d in an
    ``nn.Sequential`` folded into that conv and replaced by ``nn.Identity``; forward is unchanged in eval mode.

    Raises ValueError if a BatchNorm2d is left unfolded (it would still normalise with frozen statistics,
    but the fake-quantized weights would then not be the ones the exporters quantize).
    """
    out = copy.deepcopy(model).eval()
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            mean, var = bn.running_mean, bn.running_var
            if mean is None or var is None:
                raise ValueError(f"fold_batchnorm: {b} has no running statistics (track_running_stats=False)")
            inv = bn.weight / torch.sqrt(var + bn.eps)  # gamma / sigma, per output channel
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride),
                               conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
                               _pair(conv.dilation), conv.groups, bias=True, padding_mode=conv.padding_mode)
            folded.weight.copy_(conv.weight * inv.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
            assert folded.bias is not None  # bias=True
            folded.bias.copy_(bn.bias + (bias - mean) * inv)
            seq._modules[a] = folded
            seq._modules[b] = nn.Identity()
    left = [n for n, m in out.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"fold_batchnorm: BatchNorm layers not preceded by a Conv2d in a Sequential: {left}")
    return out


def _pair(t: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's kernel/stride/padding/dilation, always two values."""
    a, b = t
    return a, b


# --------------------------------------------------------------------------- fake quantization
@dataclass(frozen=True, kw_only=True)
class FakeQuantSpec:
    """What to simulate. ``weight_bits`` / ``act_bits`` None keeps that side in float.

    ``weight_qmax`` overrides ``2^(weight_bits-1) - 1`` (64 simulates onnxruntime's 7-bit reduce_range).
    ``layer_weight_bits`` maps a top-level layer index of the `StaticSubnet` (see `stage_of_layers`) to its
    own weight bit-width: mixed precision per layer or stage.
    """

    weight_bits: int | None = 8
    per_channel: bool = True
    weight_qmax: int | None = None
    act_bits: int | None = 8
    layer_weight_bits: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, b, lo in (("weight_bits", self.weight_bits, 1), ("act_bits", self.act_bits, 2),
                            *((f"layer_weight_bits[{k}]", v, 1) for k, v in self.layer_weight_bits.items())):
            if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not lo <= b <= 16):
                raise ValueError(f"FakeQuantSpec.{name}: expected an integer bit-width in {lo}..16 or None, got {b!r}")
        if self.act_bits not in (None, 8):
            raise ValueError(
                f"FakeQuantSpec.act_bits: only 8 (int8 activations) or None is supported, got {self.act_bits}")
        object.__setattr__(self, "layer_weight_bits", dict(self.layer_weight_bits))

    def qmax_for(self, bits: int) -> int:
        if self.weight_qmax is not None and bits == self.weight_bits:
            return self.weight_qmax
        return 2 ** (bits - 1) - 1


class _WeightFakeQuant(nn.Module):
    """Parametrization ``w -> w_hat``: symmetric, per output channel (dim 0) or per tensor, STE gradients."""

    def __init__(self, *, qmax: int, per_channel: bool) -> None:
        super().__init__()
        self.qmax = qmax
        self.per_channel = per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.qmax == 0:  # 1 bit: binarized weights, alpha * sign(w) with alpha = mean |w| (XNOR-Net)
            dims = tuple(range(1, w.dim())) if self.per_channel else tuple(range(w.dim()))
            alpha = w.detach().abs().mean(dim=dims, keepdim=True)
            w_hat = alpha * torch.where(w >= 0, 1.0, -1.0)
            return w + (w_hat - w).detach()  # straight-through gradient
        if self.per_channel:
            absmax = w.detach().abs().flatten(1).amax(1)
            scale = (absmax / self.qmax).clamp_min(1e-12)
            zp = torch.zeros_like(scale, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -self.qmax, self.qmax)
        scale_f = float((w.detach().abs().max() / self.qmax).clamp_min(1e-12))
        return torch.fake_quantize_per_tensor_affine(w, scale_f, 0, -self.qmax, self.qmax)


class _ActFakeQuant(nn.Module):
    """Per-tensor affine int8 fake quantization with a min/max observer.

    ``observe`` selects how a batch updates the range: ``"minmax"`` widens it to cover the batch (calibration,
    the exporters' min-max rule), ``"ema"`` moves it by ``momentum`` towards the batch's range (training),
    ``"off"`` freezes it. ``quantize`` False passes the input through (observing only).
    """

    lo: torch.Tensor  # observed range, buffers
    hi: torch.Tensor

    def __init__(self, *, momentum: float = 0.01) -> None:
        super().__init__()
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))
        self.momentum = momentum
        self.observe = "minmax"
        self.quantize = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe != "off":
            lo, hi = x.detach().min(), x.detach().max()
            if self.observe == "minmax" or not torch.isfinite(self.lo):
                self.lo.copy_(torch.minimum(self.lo, lo))
                self.hi.copy_(torch.maximum(self.hi, hi))
            else:
                self.lo.lerp_(lo, self.momentum)
                self.hi.lerp_(hi, self.momentum)
        if not self.quantize or not torch.isfinite(self.lo):
            return x
        lo_f, hi_f = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = max((hi_f - lo_f) / 255.0, 1e-8)
        zp = int(max(-128, min(127, round(-128 - lo_f / scale))))
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127)


_ACT_POINTS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Hardswish)


def stage_of_layers(model: StaticSubnet) -> list[str]:
    """Name of the part of the network each top-level layer of ``model`` belongs to: ``stem``, ``first``,
    ``stage1`` .. ``stageN`` (the elastic stages), ``final_expand``, ``head``."""
    names = ["stem", "first"]
    names += [f"stage{s + 1}" for s, _, _ in model.arch.active_slots()]
    names += ["final_expand", "head"]
    if len(names) != len(model):
        raise ValueError(f"stage_of_layers: {len(names)} layer names for a model of {len(model)} layers")
    return names


class FakeQuant:
    """Fake quantization attached to a BN-folded model in place; `remove` bakes or restores float weights.

    Usage: ``fq = FakeQuant(model, spec)``; ``fq.calibrate(batches)`` sets the activation ranges (min-max);
    train or evaluate ``model``; ``fq.remove(bake=True)`` leaves the weights on the quantization grid (what
    the exporters then store exactly), ``bake=False`` restores the float weights.
    """

    def __init__(self, model: nn.Module, spec: FakeQuantSpec) -> None:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError(
                "FakeQuant: fold BN first (supernet.qat.fold_batchnorm); the exporters quantize folded weights")
        self.model = model
        self.spec = spec
        self._weighted: list[nn.Module] = []
        self._hooks: list[Any] = []
        self.observers: list[_ActFakeQuant] = []
        layers = list(model.children()) if isinstance(model, nn.Sequential) else [model]
        for idx, layer in enumerate(layers):
            bits = spec.layer_weight_bits.get(idx, spec.weight_bits)
            for m in layer.modules():
                if bits is not None and isinstance(m, (nn.Conv2d, nn.Linear)):
                    parametrize.register_parametrization(
                        m, "weight", _WeightFakeQuant(qmax=spec.qmax_for(bits), per_channel=spec.per_channel))
                    self._weighted.append(m)
        if spec.act_bits is not None:
            first = _ActFakeQuant()
            self.observers.append(first)
            self._hooks.append(model.register_forward_pre_hook(lambda _m, args, q=first: (q(args[0]), *args[1:])))
            for m in model.modules():
                if isinstance(m, _ACT_POINTS):
                    q = _ActFakeQuant()
                    self.observers.append(q)
                    self._hooks.append(m.register_forward_hook(lambda _m, _i, out, q=q: q(out)))

    def set_observe(self, mode: str) -> None:
        if mode not in ("minmax", "ema", "off"):
            raise ValueError(f"observe mode {mode!r}: expected 'minmax', 'ema' or 'off'")
        for q in self.observers:
            q.observe = mode

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> int:
        """Reset the activation ranges to the min/max over ``batches`` (eval mode); return images seen."""
        was = self.model.training
        self.model.eval()
        for q in self.observers:
            q.lo.fill_(float("inf"))
            q.hi.fill_(float("-inf"))
            q.quantize = False  # ranges of float activations, as the exporters' calibration sees them
        self.set_observe("minmax")
        seen = 0
        for x in batches:
            self.model(x)
            seen += x.shape[0]
        for q in self.observers:
            q.quantize = True
        self.set_observe("off")
        self.model.train(was)
        if seen == 0 and len(self.observers):
            raise ValueError("FakeQuant.calibrate: got no batches; activation ranges would be empty")
        return seen

    def remove(self, *, bake: bool = True) -> nn.Module:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for m in self._weighted:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=bake)
        self._weighted.clear()
        return self.model


# --------------------------------------------------------------------------- QAT
@dataclass(frozen=True, kw_only=True)
class QATConfig:
    """A short quantization-aware fine-tuning of one static subnet.

    Attributes:
        epochs: passes over ``max_train_images`` training images (fractions allowed).
        lr: peak Adam learning rate (cosine decay to 0, no warm-up). Adam because the folded weights' scales
            differ by orders of magnitude between channels, which SGD's one step size handles badly.
        batch_size: images per step.
        kd_ratio: weight alpha of distillation from the fp32 subnet: ``(1 - alpha) CE + alpha T^2 KL``.
        kd_temperature: T.
        max_train_images: seeded subset of the train split (None = all of it).
        ema_fraction: share of the steps during which activation ranges follow the batches (EMA); frozen after.
        augment: shift augmentation of `supernet.data.iterate_batches`.
        seed: data order and augmentation.
    """

    epochs: float = 1.0
    lr: float = 1e-4
    batch_size: int = 32
    kd_ratio: float = 0.5
    kd_temperature: float = 2.0
    max_train_images: int | None = None
    ema_fraction: float = 0.5
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.epochs > 0 or not self.lr > 0:
            raise ValueError(f"QATConfig: epochs and lr must be > 0, got {self.epochs} and {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"QATConfig.batch_size: expected >= 1, got {self.batch_size}")
        if not 0.0 <= self.kd_ratio <= 1.0 or not self.kd_temperature > 0:
            raise ValueError("QATConfig: kd_ratio must be in [0, 1] and kd_temperature > 0")
        if not 0.0 <= self.ema_fraction <= 1.0:
            raise ValueError(f"QATConfig.ema_fraction: expected a share in [0, 1], got {self.ema_fraction}")
        if self.max_train_images is not None and self.max_train_images < 1:
            raise ValueError(f"QATConfig.max_train_images: expected >= 1 or None, got {self.max_train_images}")


@dataclass(frozen=True)
class QATResult:
    """The fine-tuned model (BN folded, weights on the quantization grid, eval mode) and what happened."""

    model: StaticSubnet
    steps: int
    images: int
    seconds: float
    loss_first: float
    loss_last: float
    config: dict[str, Any]


def should_run_qat(*, fp32_top1: float, ptq_top1: float, threshold_pts: float, force: bool = False) -> bool:
    """QAT runs when forced or when PTQ loses more than ``threshold_pts`` percentage points of top-1."""
    return force or 100.0 * (fp32_top1 - ptq_top1) > threshold_pts


def qat_finetune(
    model: StaticSubnet,
    data: DataSplits,
    *,
    config: QATConfig,
    spec: FakeQuantSpec,
    calib_images: int = 256,
    calib_seed: int = 0,
) -> QATResult:
    """Fine-tune a BN-folded copy of ``model`` (eval mode, BN recalibrated) with fake quantization ``spec``.

    Activation ranges start as the min-max over ``calib_images`` training images (the exporters' calibration),
    follow the batches by EMA for ``config.ema_fraction`` of the steps, then stay frozen. The teacher of the
    distillation term is ``model`` itself (fp32). ``model`` is not modified. The returned model is plain
    float (no hooks), with weights on the ``spec`` grid; export it with the same quantization settings, whose
    calibration re-estimates activation ranges on it.
    """
    from supernet.data import iterate_batches
    from supernet.evaluate import calibration_batches
    from supernet.losses import kl_distillation

    res = model.arch.resolution
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    student = fold_batchnorm(model)
    fq = FakeQuant(student, spec)
    fq.calibrate(calibration_batches(data, n_images=calib_images, resolution=res, seed=calib_seed))
    g = torch.Generator().manual_seed(config.seed)
    train = data.train
    if config.max_train_images is not None and config.max_train_images < len(train):
        from supernet.data import ImageDataset

        idx = torch.randperm(len(train), generator=g)[: config.max_train_images]
        train = ImageDataset(images=train.images[idx], labels=train.labels[idx])
    steps_per_epoch = max(1, len(train) // config.batch_size)
    total = max(1, math.ceil(config.epochs * steps_per_epoch))
    ema_steps = round(config.ema_fraction * total)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    alpha, t = config.kd_ratio, config.kd_temperature
    losses: list[float] = []
    step = images = 0
    t0 = time.perf_counter()
    student.train()
    fq.set_observe("ema" if ema_steps > 0 else "off")
    while step < total:
        for x, y in iterate_batches(train, batch_size=config.batch_size, mean=data.mean, std=data.std,
                                    generator=g, augment=config.augment, resolution=res, drop_last=True):
            if step == ema_steps:
                fq.set_observe("off")
            logits = student(x)
            loss = (1 - alpha) * F.cross_entropy(logits, y)
            if alpha > 0:
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = loss + alpha * kl_distillation(logits, t_logits, temperature=t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            images += x.shape[0]
            if step >= total:
                break
    fq.set_observe("off")
    student.eval()
    fq.remove(bake=True)
    seconds = time.perf_counter() - t0
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    log.info("QAT %s: %d steps, %d images, %.1f s, loss %.3f -> %.3f", model.arch, step, images, seconds,
             sum(head) / len(head), sum(tail) / len(tail))
    return QATResult(model=student, steps=step, images=images, seconds=seconds, loss_first=sum(head) / len(head),
                     loss_last=sum(tail) / len(tail), config={"qat": asdict(config), "fake_quant": asdict(spec)})


# --------------------------------------------------------------------------- simulated bit-widths
@torch.no_grad()
def simulate_quantized(
    model: StaticSubnet,
    *,
    spec: FakeQuantSpec,
    calib_batches: Iterable[torch.Tensor] | None = None,
    stage_weight_bits: Mapping[str, int] | None = None,
) -> nn.Module:
    """A BN-folded copy of ``model`` whose forward *simulates* ``spec`` in float arithmetic (accuracy studies).

    No runtime executes these bit-widths here, so nothing made from this model has a latency or a file size;
    callers label its results ``simulated``. ``stage_weight_bits`` maps names of `stage_of_layers` (``stem``,
    ``stage3``, ``head`` ...) to weight bit-widths, overriding ``spec.weight_bits`` there (mixed precision).
    Activation fake quantization (``spec.act_bits``) needs ``calib_batches`` for its ranges.
    """
    folded = fold_batchnorm(model)
    if stage_weight_bits:
        names = stage_of_layers(model)
        unknown = sorted(set(stage_weight_bits) - set(names))
        if unknown:
            raise ValueError(f"stage_weight_bits: unknown part(s) {unknown}; this subnet has {sorted(set(names))}")
        per_layer = {i: stage_weight_bits[n] for i, n in enumerate(names) if n in stage_weight_bits}
        spec = FakeQuantSpec(**{**asdict(spec), "layer_weight_bits": {**spec.layer_weight_bits, **per_layer}})
    fq = FakeQuant(folded, spec)
    if spec.act_bits is not None:
        if calib_batches is None:
            raise ValueError("simulate_quantized: activation fake quantization needs calib_batches for its ranges")
        fq.calibrate(calib_batches)
    return folded.eval()


def describe_spec(spec: FakeQuantSpec, stage_weight_bits: Mapping[str, int] | None = None) -> str:
    """Short label such as ``w4a8-pc``, ``w4-pc`` (float activations) or ``w8[stage3-5:4]a8-pc``."""
    w = "32" if spec.weight_bits is None else str(spec.weight_bits)
    if stage_weight_bits:
        groups: dict[int, list[str]] = {}
        for name, b in stage_weight_bits.items():
            groups.setdefault(b, []).append(name)
        w += "[" + ",".join(f"{'+'.join(sorted(v))}:{b}" for b, v in sorted(groups.items())) + "]"
    a = "" if spec.act_bits is None else f"a{spec.act_bits}"
    return f"w{w}{a}-{'pc' if spec.per_channel else 'pt'}"
