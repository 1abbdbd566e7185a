"""The one walk over a network: `ArchConfig` -> ordered list of `LayerSpec`, and static modules built from specs.

A `LayerSpec` is the unit everything else agrees on:
  * the supernet's forward and `get_active_subnet` both iterate `layer_specs(backbone, cfg)`;
  * the static subnet is ``nn.Sequential(build_layer(spec) for spec in layer_specs(...))``;
  * a latency lookup table has one row per distinct `LayerSpec`, measured on a one-layer model built by the
    same `build_layer`, so a table row and the layer it times cannot drift apart.

Network (OFA MobileNetV3, widths before the width multiplier):
  stem 3x3/2 conv (16, h-swish) -> first block MBConv k3 e1 (16, ReLU) ->
  5 elastic stages, widths 24/40/80/112/160, strides 2/2/2/1/2, act ReLU/ReLU/h-swish x3, SE off/on/off/on/on ->
  final expand 1x1 (960, h-swish) -> global pool -> feature mix 1x1 (1280, h-swish) -> dropout -> linear.
Spatial sizes: a stride-2 conv with padding k//2 maps side h to ceil(h/2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from supernet.space import ArchConfig, SearchSpace

__all__ = [
    "Backbone",
    "LayerSpec",
    "build_layer",
    "build_static_model",
    "count_macs",
    "layer_specs",
    "make_divisible",
]

Act = Literal["relu", "hswish", "none"]
Op = Literal["stem", "mbconv", "final_expand", "head"]
BACKBONE_SCHEMA_VERSION = 1


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10 % (MobileNet convention)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _out_hw(hw: int, stride: int) -> int:
    return -(-hw // stride)  # ceil


@dataclass(frozen=True)
class Backbone:
    """The fixed macro-structure of the supernet (what the search does not change)."""

    in_channels: int = 3
    num_classes: int = 1000
    width_mult: float = 1.0
    stem_width: int = 16
    first_block_width: int = 16
    stage_widths: tuple[int, ...] = (24, 40, 80, 112, 160)
    stage_strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    stage_acts: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
    stage_se: tuple[bool, ...] = (False, True, False, True, True)
    final_expand_width: int = 960
    feature_mix_width: int = 1280
    dropout: float = 0.1
    schema_version: int = field(default=BACKBONE_SCHEMA_VERSION)

    def __post_init__(self) -> None:
        n = len(self.stage_widths)
        for name in ("stage_strides", "stage_acts", "stage_se"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Backbone.{name}: expected {n} entries (one per stage), got {len(getattr(self, name))}")
        for a in self.stage_acts:
            if a not in ("relu", "hswish"):
                raise ValueError(f"Backbone.stage_acts: {a!r} is not 'relu' or 'hswish'")
        if self.in_channels < 1 or self.num_classes < 2:
            raise ValueError("Backbone: in_channels must be >= 1 and num_classes >= 2")
        if not 0 < self.width_mult <= 4:
            raise ValueError(f"Backbone.width_mult: expected 0 < w <= 4, got {self.width_mult}")

    @property
    def n_stages(self) -> int:
        return len(self.stage_widths)

    def ch(self, width: int) -> int:
        """Channels after the width multiplier."""
        return make_divisible(width * self.width_mult)

    @property
    def head_in_ch(self) -> int:
        return self.ch(self.final_expand_width)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Backbone:
        if d.get("schema_version") != BACKBONE_SCHEMA_VERSION:
            raise ValueError(
                f"backbone JSON: schema_version {d.get('schema_version')!r} not supported "
                f"(expected {BACKBONE_SCHEMA_VERSION})"
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"backbone JSON: unknown field(s) {sorted(unknown)}")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fields)


@dataclass(frozen=True, order=True)
class LayerSpec:
    """One layer of a concrete network, with everything that determines its cost.

    ``in_hw`` is the input side in px; ``mid_ch`` is the expanded width of an MBConv (``in_ch`` when the
    block has no expansion) or the feature-mix width of the head; ``expand`` is the MBConv expand ratio
    (0 for non-MBConv layers).
    """

    op: str
    in_hw: int
    in_ch: int
    out_ch: int
    kernel: int = 1
    stride: int = 1
    expand: int = 0
    mid_ch: int = 0
    se: bool = False
    act: str = "none"

    @property
    def out_hw(self) -> int:
        return 1 if self.op == "head" else _out_hw(self.in_hw, self.stride)

    @property
    def key(self) -> str:
        """Stable identifier, used as the LUT row key."""
        return (
            f"{self.op}:hw{self.in_hw}:c{self.in_ch}-{self.out_ch}:k{self.kernel}:s{self.stride}:"
            f"e{self.expand}:m{self.mid_ch}:se{int(self.se)}:{self.act}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def macs(self) -> int:
        """Multiply-accumulates of the layer (convs, SE and linear; activations and BN ignored)."""
        ho = self.out_hw
        if self.op == "stem" or self.op == "final_expand":
            return self.in_ch * self.out_ch * self.kernel * self.kernel * ho * ho
        if self.op == "head":
            return self.in_ch * self.mid_ch + self.mid_ch * self.out_ch
        macs = 0
        if self.expand != 1:
            macs += self.in_ch * self.mid_ch * self.in_hw * self.in_hw
        macs += self.mid_ch * self.kernel * self.kernel * ho * ho
        if self.se:
            r = se_channels(self.mid_ch)
            macs += 2 * self.mid_ch * r
        macs += self.mid_ch * self.out_ch * ho * ho
        return macs


def se_channels(mid_ch: int, reduction: int = 4) -> int:
    return make_divisible(mid_ch // reduction)


def mbconv_mid_channels(in_ch: int, expand: int) -> int:
    return in_ch if expand == 1 else make_divisible(round(in_ch * expand))


def layer_specs(backbone: Backbone, cfg: ArchConfig) -> list[LayerSpec]:
    """The network of ``cfg`` as an ordered list of layers. This is the only walk over an architecture."""
    if len(cfg.depths) != backbone.n_stages:
        raise ValueError(
            f"architecture has {len(cfg.depths)} stages but the backbone has {backbone.n_stages}"
        )
    specs: list[LayerSpec] = []
    hw = cfg.resolution
    stem = LayerSpec("stem", hw, backbone.in_channels, backbone.ch(backbone.stem_width), kernel=3, stride=2, act="hswish")
    specs.append(stem)
    hw, ch = stem.out_hw, stem.out_ch
    first_out = backbone.ch(backbone.first_block_width)
    first = LayerSpec("mbconv", hw, ch, first_out, kernel=3, stride=1, expand=1, mid_ch=ch, se=False, act="relu")
    specs.append(first)
    ch = first_out
    for s, j, slot in cfg.active_slots():
        stride = backbone.stage_strides[s] if j == 0 else 1
        out_ch = backbone.ch(backbone.stage_widths[s])
        e = cfg.expand_ratios[slot]
        spec = LayerSpec(
            "mbconv", hw, ch, out_ch,
            kernel=cfg.kernel_sizes[slot], stride=stride, expand=e, mid_ch=mbconv_mid_channels(ch, e),
            se=backbone.stage_se[s], act=backbone.stage_acts[s],
        )
        specs.append(spec)
        hw, ch = spec.out_hw, out_ch
    fe = LayerSpec("final_expand", hw, ch, backbone.head_in_ch, kernel=1, stride=1, act="hswish")
    specs.append(fe)
    specs.append(
        LayerSpec("head", hw, fe.out_ch, backbone.num_classes, mid_ch=backbone.ch(backbone.feature_mix_width), act="hswish")
    )
    return specs


def count_macs(backbone: Backbone, cfg: ArchConfig) -> int:
    return sum(s.macs() for s in layer_specs(backbone, cfg))


# --------------------------------------------------------------------------- static modules
def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"activation {name!r}: expected 'relu', 'hswish' or 'none'")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation; `conv` and `bn` are its first two layers, typed."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int, stride: int = 1, groups: int = 1, act: str) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            _act(act),
        )

    @property
    def conv(self) -> nn.Conv2d:
        m = self[0]
        assert isinstance(m, nn.Conv2d)
        return m

    @property
    def bn(self) -> nn.BatchNorm2d:
        m = self[1]
        assert isinstance(m, nn.BatchNorm2d)
        return m


def conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    """The bias of a conv built with ``bias=True`` (torch types it as optional)."""
    if conv.bias is None:
        raise ValueError("conv has no bias")
    return conv.bias


def bn_buffer(bn: nn.modules.batchnorm._BatchNorm, name: str) -> torch.Tensor:
    """A running-statistics buffer (``running_mean``, ``running_var``, ``num_batches_tracked``) that must exist."""
    t = getattr(bn, name)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{type(bn).__name__} has no {name} (track_running_stats=False)")
    return t


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        r = se_channels(channels)
        self.reduce = nn.Conv2d(channels, r, 1, bias=True)
        self.expand = nn.Conv2d(r, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.relu(self.reduce(s))
        return x * nn.functional.hardsigmoid(self.expand(s))


class MBConv(nn.Module):
    """Static inverted-bottleneck block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ residual)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        mid = spec.mid_ch
        self.inverted_bottleneck = (
            None if spec.expand == 1 else ConvBNAct(spec.in_ch, mid, kernel=1, act=spec.act)
        )
        self.depthwise = ConvBNAct(mid, mid, kernel=spec.kernel, stride=spec.stride, groups=mid, act=spec.act)
        self.se = SqueezeExcite(mid) if spec.se else None
        self.point_linear = ConvBNAct(mid, spec.out_ch, kernel=1, act="none")
        self.residual = spec.stride == 1 and spec.in_ch == spec.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.inverted_bottleneck is None else self.inverted_bottleneck(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.point_linear(y)
        return x + y if self.residual else y


class Head(nn.Module):
    """Global pool -> 1x1 feature mix (h-swish, no BN) -> dropout -> linear classifier."""

    def __init__(self, spec: LayerSpec, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.feature_mix = nn.Conv2d(spec.in_ch, spec.mid_ch, 1, bias=False)
        self.act = nn.Hardswish(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(spec.mid_ch, spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        x = self.act(self.feature_mix(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_layer(spec: LayerSpec, *, dropout: float = 0.0) -> nn.Module:
    """A freshly initialised static module for one layer (used for subnets and for LUT measurements)."""
    if spec.op == "stem":
        return ConvBNAct(spec.in_ch, spec.out_ch, kernel=spec.kernel, stride=spec.stride, act=spec.act)
    if spec.op == "final_expand":
        return ConvBNAct(spec.in_ch, spec.out_ch, kernel=1, act=spec.act)
    if spec.op == "mbconv":
        return MBConv(spec)
    if spec.op == "head":
        return Head(spec, dropout=dropout)
    raise ValueError(f"LayerSpec.op {spec.op!r}: expected one of stem, mbconv, final_expand, head")


class StaticSubnet(nn.Sequential):
    """A plain network: the layers of one architecture in order. Carries its architecture for bookkeeping."""

    def __init__(self, layers: list[nn.Module], *, arch: ArchConfig, backbone: Backbone) -> None:
        super().__init__(*layers)
        self.arch = arch
        self.backbone = backbone

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.backbone.in_channels, self.arch.resolution, self.arch.resolution)


def build_static_model(backbone: Backbone, cfg: ArchConfig, *, space: SearchSpace | None = None) -> StaticSubnet:
    """A randomly initialised static network for ``cfg`` (validated against ``space`` when given)."""
    if space is not None:
        cfg = space.canonical(cfg)
    specs = layer_specs(backbone, cfg)
    return StaticSubnet(
        [build_layer(s, dropout=backbone.dropout) for s in specs], arch=cfg, backbone=backbone
    )
