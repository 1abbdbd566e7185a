"""Structured pruning of a static subnet: remove expanded (depthwise) channels of MBConv blocks.

Notation: block b of the subnet has the expanded width m_b (the 1x1 expansion's outputs, the depthwise conv's
channels, the SE input and the projection's inputs). Pruning keeps k_b of them,

    k_b = clamp(round_to * round((1 - r_b) * m_b / round_to), min_channels, m_b)

for a pruned share r_b (``ratio``; iterative pruning reaches it in ``steps`` steps of equal keep factor
(1 - r)^(1/steps), fine-tuning after each). Which channels go is ranked per block by a criterion:

  * ``l1``: ||w_dw,c||_1 * |gamma_c| / sigma_c * ||w_proj[:, c]||_1, the L1 norm of the channel's BN-scaled
    depthwise filter times the L1 norm of its column of the projection (Li et al. 2017, "Pruning Filters for
    Efficient ConvNets", extended to the path through the block);
  * ``sensitivity``: |sum_{n,h,w} a_c * dL/da_c| over ``sensitivity_images`` training images, a the depthwise
    output (after the activation) and L the cross-entropy: the first-order Taylor estimate of the loss change when
    channel c is removed (Molchanov et al. 2017, "Pruning Convolutional Neural Networks for Resource Efficient
    Inference").

The squeeze-excite hidden width follows the block width (``se_channels(k_b)``, as `supernet.layers.build_layer`
builds it): its hidden units are kept by the L1 norm of their weights on the kept channels.

A pruned network is still one walk over layers: `PrunedArch` is an `ArchConfig` plus the kept width of every
elastic block, and its `LayerSpec`s are those of the architecture with ``mid_ch`` replaced (``expand`` keeps the
original ratio, which says the block has an expansion conv). Because ``mid_ch`` is part of ``LayerSpec.key``, a
latency table built for the search space has no row for a pruned layer and says so (`MissingLayerError`) rather
than pricing it as the unpruned one; `latency_tables.pruned` prices or measures them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from supernet.errors import InputError
from supernet.finetune import FinetuneConfig, FinetuneResult, kd_finetune
from supernet.layers import (
    Backbone,
    LayerSpec,
    MBConv,
    StaticSubnet,
    bn_buffer,
    build_layer,
    layer_specs,
)
from supernet.space import ArchConfig

if TYPE_CHECKING:
    from supernet.data import DataSplits

__all__ = [
    "CRITERIA",
    "PRUNED_ARCH_SCHEMA_VERSION",
    "PruneConfig",
    "PruneResult",
    "PrunedArch",
    "PrunedSubnet",
    "build_pruned_model",
    "channel_importance",
    "model_specs",
    "planned_arch",
    "prune_channels",
    "prune_subnet",
]

log = logging.getLogger(__name__)
CRITERIA = ("l1", "sensitivity")
PRUNED_ARCH_SCHEMA_VERSION = 1
_FIRST_ELASTIC_LAYER = 2  # stem, first block (expand 1, not prunable), then the elastic blocks


@dataclass(frozen=True)
class PrunedArch:
    """An architecture whose elastic MBConv blocks have the expanded widths ``mid_channels`` (one per active
    block, in network order). ``str`` form: ``<arch>~m<w1>.<w2>...``."""

    arch: ArchConfig
    mid_channels: tuple[int, ...]

    def __post_init__(self) -> None:
        n = sum(self.arch.depths)
        if len(self.mid_channels) != n:
            raise ValueError(f"PrunedArch: {len(self.mid_channels)} mid widths for the {n} active blocks of {self.arch}")
        bad = [m for m in self.mid_channels if isinstance(m, bool) or not isinstance(m, int) or m < 1]
        if bad:
            raise ValueError(f"PrunedArch.mid_channels: expected integers >= 1, got {bad}")

    def __str__(self) -> str:
        return f"{self.arch}~m{'.'.join(str(m) for m in self.mid_channels)}"

    def specs(self, backbone: Backbone) -> list[LayerSpec]:
        """The layers: `layer_specs` of the architecture with the pruned ``mid_ch`` of every elastic block.

        Raises ValueError if a width exceeds the unpruned one (pruning only removes channels)."""
        base = layer_specs(backbone, self.arch)
        out = list(base)
        for j, m in enumerate(self.mid_channels):
            s = base[_FIRST_ELASTIC_LAYER + j]
            if m > s.mid_ch:
                raise ValueError(f"PrunedArch {self}: block {j} has {m} expanded channels, more than the unpruned "
                                 f"{s.mid_ch}")
            out[_FIRST_ELASTIC_LAYER + j] = replace(s, mid_ch=m)
        return out

    def macs(self, backbone: Backbone) -> int:
        return sum(s.macs() for s in self.specs(backbone))

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": PRUNED_ARCH_SCHEMA_VERSION, "arch": self.arch.to_json(),
                "mid_channels": list(self.mid_channels)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PrunedArch:
        if d.get("schema_version") != PRUNED_ARCH_SCHEMA_VERSION:
            raise ValueError(f"pruned architecture JSON: schema_version {d.get('schema_version')!r} not supported "
                             f"(expected {PRUNED_ARCH_SCHEMA_VERSION})")
        return cls(arch=ArchConfig.from_json(d["arch"]), mid_channels=tuple(int(m) for m in d["mid_channels"]))

    @classmethod
    def unpruned(cls, backbone: Backbone, arch: ArchConfig) -> PrunedArch:
        specs = layer_specs(backbone, arch)
        return cls(arch=arch, mid_channels=tuple(s.mid_ch for s in specs[_FIRST_ELASTIC_LAYER:-2]))


class PrunedSubnet(StaticSubnet):
    """A `StaticSubnet` whose elastic blocks have the widths of ``pruned_arch``; plain modules, exports as usual."""

    def __init__(self, layers: list[nn.Module], *, pruned_arch: PrunedArch, backbone: Backbone) -> None:
        super().__init__(layers, arch=pruned_arch.arch, backbone=backbone)
        self.pruned_arch = pruned_arch


def build_pruned_model(backbone: Backbone, pruned_arch: PrunedArch) -> PrunedSubnet:
    """A freshly initialised network of ``pruned_arch`` (the loader of a pruned model's weights starts here)."""
    return PrunedSubnet([build_layer(s, dropout=backbone.dropout) for s in pruned_arch.specs(backbone)],
                        pruned_arch=pruned_arch, backbone=backbone)


def model_specs(model: StaticSubnet) -> list[LayerSpec]:
    """The layers of a static subnet, pruned or not (what latency tables price)."""
    if isinstance(model, PrunedSubnet):
        return model.pruned_arch.specs(model.backbone)
    return layer_specs(model.backbone, model.arch)


def _blocks(model: StaticSubnet) -> list[MBConv]:
    """The prunable blocks: elastic MBConv layers (they all have an expansion conv), in network order."""
    layers = list(model.children())[_FIRST_ELASTIC_LAYER:-2]
    if not all(isinstance(b, MBConv) and b.inverted_bottleneck is not None for b in layers):
        raise ValueError("channel pruning: expected the elastic layers of a StaticSubnet to be MBConv blocks with an "
                         "expansion conv")
    return layers  # type: ignore[return-value]


def _conv_bn(seq: nn.Module | None) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The conv and BN of a `supernet.layers.ConvBNAct`."""
    conv, bn = seq[0], seq[1]  # type: ignore[index]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    return conv, bn


def _width(block: MBConv) -> int:
    return _conv_bn(block.depthwise)[0].out_channels


# --------------------------------------------------------------------------- importance
@torch.no_grad()
def _l1_scores(block: MBConv) -> torch.Tensor:
    conv, bn = _conv_bn(block.depthwise)
    assert bn.running_var is not None
    scale = bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)
    dw = conv.weight.abs().flatten(1).sum(1) * scale
    proj = _conv_bn(block.point_linear)[0].weight.abs().sum((0, 2, 3))
    return dw * proj


def _sensitivity_scores(model: StaticSubnet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    blocks = _blocks(model)
    acts: dict[int, torch.Tensor] = {}
    scores = [torch.zeros(_width(b)) for b in blocks]

    def hook(i: int) -> Any:
        def f(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            out.retain_grad()
            acts[i] = out
        return f

    handles = [b.depthwise.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    was = model.training
    model.eval()  # BN with its statistics: the criterion is about the deployed network
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            # inplace activations would overwrite the tensors whose gradient we read; work on a copy without them
            loss = F.cross_entropy(model(x), y, reduction="sum")
            loss.backward()
            for i, a in acts.items():
                if a.grad is not None:
                    scores[i] += (a * a.grad).sum((2, 3)).sum(0).abs().detach()
            acts.clear()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    return scores


def channel_importance(
    model: StaticSubnet,
    *,
    criterion: str = "l1",
    data: DataSplits | None = None,
    images: int = 256,
    seed: int = 0,
) -> list[torch.Tensor]:
    """One score per expanded channel of every elastic block (higher = keep); see the module docstring.

    ``sensitivity`` needs ``data`` (``images`` un-augmented training images, seeded)."""
    if criterion not in CRITERIA:
        raise ValueError(f"pruning criterion {criterion!r}: expected one of {', '.join(CRITERIA)}")
    if criterion == "l1":
        return [_l1_scores(b) for b in _blocks(model)]
    if data is None:
        raise ValueError("pruning criterion 'sensitivity' needs data (training images for the gradients)")
    from supernet.data import ImageDataset, iterate_batches

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[: min(images, len(data.train))]
    sub = ImageDataset(images=data.train.images[idx], labels=data.train.labels[idx])
    work = _without_inplace(model)
    batches = iterate_batches(sub, batch_size=64, mean=data.mean, std=data.std, resolution=model.arch.resolution)
    return _sensitivity_scores(work, batches)


def _without_inplace(model: StaticSubnet) -> StaticSubnet:
    """A copy whose activations are not in-place (their outputs' gradients are read by the Taylor criterion)."""
    work = copy.deepcopy(model)
    for m in work.modules():
        if isinstance(m, (nn.ReLU, nn.Hardswish)):
            m.inplace = False
    return work


# --------------------------------------------------------------------------- surgery
def _keep_count(m: int, ratio: float, *, min_channels: int, round_to: int) -> int:
    k = round_to * round((1.0 - ratio) * m / round_to)
    return int(max(min(min_channels, m), min(m, k)))


def _take_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    assert src.running_mean is not None and src.running_var is not None and src.num_batches_tracked is not None
    assert dst.running_mean is not None and dst.running_var is not None and dst.num_batches_tracked is not None
    dst.weight.copy_(src.weight[idx])
    dst.bias.copy_(src.bias[idx])
    for name in ("running_mean", "running_var"):
        bn_buffer(dst, name).copy_(bn_buffer(src, name)[idx])
    bn_buffer(dst, "num_batches_tracked").copy_(bn_buffer(src, "num_batches_tracked"))


@torch.no_grad()
def _prune_block(block: MBConv, spec: LayerSpec, keep: torch.Tensor) -> MBConv:
    idx = keep.sort().values
    new = build_layer(replace(spec, mid_ch=int(idx.numel())))
    assert isinstance(new, MBConv)
    (ib_new, ib_bn_new), (ib, ib_bn) = _conv_bn(new.inverted_bottleneck), _conv_bn(block.inverted_bottleneck)
    ib_new.weight.copy_(ib.weight[idx])
    _take_bn(ib_bn_new, ib_bn, idx)
    (dw_new, dw_bn_new), (dw, dw_bn) = _conv_bn(new.depthwise), _conv_bn(block.depthwise)
    dw_new.weight.copy_(dw.weight[idx])
    _take_bn(dw_bn_new, dw_bn, idx)
    if block.se is not None:
        assert new.se is not None
        red, exp, red_new, exp_new = block.se.reduce, block.se.expand, new.se.reduce, new.se.expand
        assert red.bias is not None and exp.bias is not None and red_new.bias is not None and exp_new.bias is not None
        hidden = red.weight[:, idx].abs().flatten(1).sum(1) + exp.weight[idx].abs().flatten(1).sum(0)
        h = hidden.topk(red_new.out_channels).indices.sort().values
        red_new.weight.copy_(red.weight[h][:, idx])
        red_new.bias.copy_(red.bias[h])
        exp_new.weight.copy_(exp.weight[idx][:, h])
        exp_new.bias.copy_(exp.bias[idx])
    (pl_new, pl_bn_new), (pl, pl_bn) = _conv_bn(new.point_linear), _conv_bn(block.point_linear)
    pl_new.weight.copy_(pl.weight[:, idx])
    pl_bn_new.load_state_dict(pl_bn.state_dict())
    return new


def prune_channels(model: StaticSubnet, keep: Sequence[torch.Tensor]) -> PrunedSubnet:
    """A new network with only the channels ``keep[b]`` (indices) of every elastic block b; ``model`` unchanged.

    Exact: with every channel kept the forward is unchanged (up to float summation order)."""
    blocks = _blocks(model)
    if len(keep) != len(blocks):
        raise ValueError(f"prune_channels: {len(keep)} keep lists for {len(blocks)} prunable blocks")
    specs = model_specs(model)
    layers = [copy.deepcopy(m) for m in model.children()]
    mids: list[int] = []
    for j, (block, k) in enumerate(zip(blocks, keep)):
        spec = specs[_FIRST_ELASTIC_LAYER + j]
        k = torch.as_tensor(k, dtype=torch.long)
        if k.numel() < 1 or int(k.max()) >= spec.mid_ch or int(k.min()) < 0 or k.unique().numel() != k.numel():
            raise ValueError(f"prune_channels: block {j}: keep indices must be distinct and in [0, {spec.mid_ch})")
        layers[_FIRST_ELASTIC_LAYER + j] = _prune_block(block, spec, k)
        mids.append(int(k.numel()))
    out = PrunedSubnet(layers, pruned_arch=PrunedArch(arch=model.arch, mid_channels=tuple(mids)),
                       backbone=model.backbone)
    return out.train(model.training)


# --------------------------------------------------------------------------- the pruning run
@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Structured pruning of one subnet.

    Attributes:
        ratio: share r of every elastic block's expanded channels removed, in [0, 1).
        criterion: ``l1`` or ``sensitivity`` (module docstring).
        steps: 1 = one-shot (prune, then fine-tune); n > 1 = iterative: n rounds of (prune to keep factor
            (1 - r)^(i/n) of the original width, fine-tune for 1/n of the budget), re-scoring every round.
        min_channels: no block keeps fewer channels (nor more than it had).
        round_to: kept widths are multiples of this (SIMD-friendly; the unpruned widths are multiples of 8).
        sensitivity_images: training images for the sensitivity criterion.
        finetune: the fine-tuning budget (the whole run's), distilling from the unpruned subnet; None = no
            fine-tuning (the pruned network as cut).
    """

    ratio: float = 0.5
    criterion: str = "l1"
    steps: int = 1
    min_channels: int = 8
    round_to: int = 8
    sensitivity_images: int = 256
    finetune: FinetuneConfig | None = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0.0 <= self.ratio < 1.0:
            raise InputError(f"pruning ratio {self.ratio!r}: expected a share of channels in [0, 1)")
        if self.criterion not in CRITERIA:
            raise InputError(f"pruning criterion {self.criterion!r}: expected one of {', '.join(CRITERIA)}")
        for name in ("steps", "min_channels", "round_to", "sensitivity_images"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"PruneConfig.{name}: expected an integer >= 1, got {v!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d


def planned_arch(backbone: Backbone, arch: ArchConfig, config: PruneConfig) -> PrunedArch:
    """The widths `prune_subnet` will reach for ``arch`` (they depend on the ratio only, not on the weights):
    lets a caller check, before any training, that a latency table can price the result."""
    base = PrunedArch.unpruned(backbone, arch)
    return PrunedArch(arch=arch, mid_channels=tuple(
        _keep_count(m, config.ratio, min_channels=config.min_channels, round_to=config.round_to)
        for m in base.mid_channels))


@dataclass(frozen=True)
class PruneResult:
    """The pruned network (BN recalibrated, eval mode) and what each round did."""

    model: PrunedSubnet
    pruned_arch: PrunedArch
    rounds: tuple[dict[str, Any], ...]
    macs_before: int
    macs_after: int
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"pruned_arch": self.pruned_arch.to_json(), "pruned_arch_str": str(self.pruned_arch),
                "rounds": list(self.rounds), "macs_before": self.macs_before, "macs_after": self.macs_after,
                "config": self.config}


def prune_subnet(model: StaticSubnet, data: DataSplits | None, *, config: PruneConfig) -> PruneResult:
    """Prune the expanded channels of ``model`` (a BN-recalibrated static subnet, eval mode; not modified) to
    ``config.ratio``, one-shot or iteratively, fine-tuning under KD from ``model`` after every round.

    ``data`` may be None only with ``criterion='l1'`` and ``finetune=None``.
    """
    if data is None and (config.criterion == "sensitivity" or config.finetune is not None):
        raise ValueError("prune_subnet: data is needed for the sensitivity criterion and for fine-tuning")
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    original = [_width(b) for b in _blocks(model)]
    macs_before = sum(s.macs() for s in model_specs(model))
    current: StaticSubnet = model
    rounds: list[dict[str, Any]] = []
    for i in range(1, config.steps + 1):
        share = 1.0 - (1.0 - config.ratio) ** (i / config.steps)  # removed share of the original width
        scores = channel_importance(current, criterion=config.criterion, data=data,
                                    images=config.sensitivity_images)
        keep = []
        for m0, sc in zip(original, scores):
            k = _keep_count(m0, share, min_channels=config.min_channels, round_to=config.round_to)
            k = min(k, sc.numel())
            keep.append(sc.topk(k).indices)
        current = prune_channels(current, keep)
        info: dict[str, Any] = {"round": i, "removed_share_target": share,
                                "mid_channels": list(current.pruned_arch.mid_channels)}  # type: ignore[attr-defined]
        if config.finetune is not None:
            assert data is not None
            ft: FinetuneResult = kd_finetune(current, teacher, data, config=config.finetune.scaled(1 / config.steps),
                                             resolution=model.arch.resolution)
            info["finetune"] = ft.to_json()
        rounds.append(info)
        log.info("pruning round %d/%d: %s", i, config.steps, current.pruned_arch)  # type: ignore[attr-defined]
    assert isinstance(current, PrunedSubnet)
    current.eval()
    return PruneResult(model=current, pruned_arch=current.pruned_arch, rounds=tuple(rounds), macs_before=macs_before,
                       macs_after=current.pruned_arch.macs(model.backbone),
                       config={"prune": {k: v for k, v in asdict(config).items() if k != "finetune"},
                               "finetune": asdict(config.finetune) if config.finetune else None})
