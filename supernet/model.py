"""Once-for-all elastic MobileNetV3 supernet.

Elastic dimensions (OFA, Cai et al. 2020):
  * kernel: each depthwise conv stores a K_max x K_max kernel; a smaller kernel k is the centre crop of the
    next larger one passed through a learned k^2 x k^2 transformation matrix shared by all channels
    (25x25 for 7->5, 9x9 for 5->3), initialised to the identity.
  * depth: stage s runs its first d_s blocks.
  * expand: the inverted bottleneck uses the first round(in_ch * e) channels (rounded to a multiple of 8);
    `sort_channels` reorders channels by importance (L1 norm of the projection weights) so that narrow
    subnets keep the most important ones; ``keep_expands`` keeps the channel sets of expand ratios trained
    in an earlier phase (OFA's ``expand_ratio_stage``).
  * resolution: the caller resizes each batch (the network is fully convolutional until global pooling).

Feature distillation reads stage outputs through `forward_features(x, stages)` (stateless; same walk as
`forward`). The active sub-network is set only through the scoped `activate(cfg)`; `get_active_subnet(cfg)`
returns a standalone `StaticSubnet` with weights copied (kernel transforms applied) and leaves the supernet
unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from supernet.layers import (
    Backbone,
    LayerSpec,
    MBConv,
    StaticSubnet,
    build_layer,
    layer_specs,
    make_divisible,
    se_channels,
)
from supernet.space import ArchConfig, SearchSpace

__all__ = ["DynamicMBConv", "OFASupernet"]

SUPERNET_CONFIG_VERSION = 1


def _act_fn(name: str) -> nn.Module:
    return nn.ReLU(inplace=False) if name == "relu" else nn.Hardswish(inplace=False)


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first C channels of a max-width BN (running stats of the slice are updated in place)."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        bn = self.bn
        if c == bn.num_features:
            return bn(x)
        training = self.training and bn.track_running_stats
        if training and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        if bn.momentum is not None:
            momentum = bn.momentum
        else:  # cumulative average, as nn.BatchNorm2d(momentum=None)
            assert bn.num_batches_tracked is not None
            momentum = 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(
            x,
            bn.running_mean[:c] if bn.running_mean is not None else None,
            bn.running_var[:c] if bn.running_var is not None else None,
            bn.weight[:c],
            bn.bias[:c],
            training or bn.running_mean is None,
            momentum,
            bn.eps,
        )

    def copy_to(self, target: nn.Module, c: int) -> None:
        """Copy the first ``c`` channels (affine parameters and running statistics) into ``target``."""
        if not isinstance(target, nn.BatchNorm2d):
            raise TypeError(f"copy_to: expected a BatchNorm2d, got {type(target).__name__}")
        target.weight.data.copy_(self.bn.weight.data[:c])
        target.bias.data.copy_(self.bn.bias.data[:c])
        for name in ("running_mean", "running_var"):
            _buffer(target, name).copy_(_buffer(self.bn, name)[:c])
        _buffer(target, "num_batches_tracked").copy_(_buffer(self.bn, "num_batches_tracked"))
        target.eps, target.momentum = self.bn.eps, self.bn.momentum


def _buffer(module: nn.Module, name: str) -> torch.Tensor:
    """A registered buffer that must exist (BN running statistics are optional in torch's types)."""
    t = module.get_buffer(name)
    if t is None:
        raise ValueError(f"{type(module).__name__} has no buffer {name!r}")
    return t


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        raise ValueError("conv has no bias")
    return conv.bias


def _weight(seq: nn.Module, i: int) -> torch.Tensor:
    """Weight of layer ``i`` of a static block part (conv or BN): a typed accessor for ``seq[i].weight``."""
    layer = seq[i] if isinstance(seq, nn.Sequential) else None
    if not isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)):
        raise TypeError(f"expected a Conv2d or BatchNorm2d at index {i}, got {type(layer).__name__}")
    return layer.weight


class DynamicDepthwise(nn.Module):
    """Depthwise conv with elastic kernel size (centre crop + learned transform) and elastic channels."""

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernel_choices = tuple(sorted(kernel_choices, reverse=True))  # e.g. (7, 5, 3)
        self.k_max = self.kernel_choices[0]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.k_max, self.k_max))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        # one k^2 x k^2 matrix per smaller kernel, shared across channels; identity = plain centre crop
        self.transforms = nn.ParameterDict(
            {f"{a}to{b}": nn.Parameter(torch.eye(b * b)) for a, b in zip(self.kernel_choices, self.kernel_choices[1:])}
        )

    def kernel(self, k: int, channels: int) -> torch.Tensor:
        if k not in self.kernel_choices:
            raise ValueError(f"kernel size {k} is not one of this layer's choices {self.kernel_choices}")
        w = self.weight[:channels]
        cur = self.k_max
        for nxt in self.kernel_choices[1:]:
            if cur == k:
                break
            start = (cur - nxt) // 2
            w = w[:, :, start : start + nxt, start : start + nxt]
            w = F.linear(w.reshape(channels, nxt * nxt), self.transforms[f"{cur}to{nxt}"]).reshape(channels, 1, nxt, nxt)
            cur = nxt
        return w

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        c = x.size(1)
        return F.conv2d(x, self.kernel(k, c), None, self.stride, k // 2, 1, c)


class DynamicSE(nn.Module):
    """Squeeze-excite on the first C channels; the bottleneck width follows C as in the static block."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        r = se_channels(max_channels)
        self.reduce = nn.Conv2d(max_channels, r, 1, bias=True)
        self.expand = nn.Conv2d(r, max_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        r = se_channels(c)
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, self.reduce.weight[:r, :c], _bias(self.reduce)[:r]))
        s = F.hardsigmoid(F.conv2d(s, self.expand.weight[:c, :r], _bias(self.expand)[:c]))
        return x * s


class DynamicMBConv(nn.Module):
    """An MBConv block slot with elastic kernel and expand ratio. In/out widths and stride are fixed."""

    def __init__(
        self, *, in_ch: int, out_ch: int, stride: int, act: str, se: bool, space: SearchSpace
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.stride, self.act_name, self.use_se = in_ch, out_ch, stride, act, se
        self.max_mid = make_divisible(round(in_ch * max(space.expand_choices)))
        self.ib_conv = nn.Conv2d(in_ch, self.max_mid, 1, bias=False)
        self.ib_bn = DynamicBatchNorm2d(self.max_mid)
        self.dw = DynamicDepthwise(self.max_mid, space.kernel_choices, stride)
        self.dw_bn = DynamicBatchNorm2d(self.max_mid)
        self.se = DynamicSE(self.max_mid) if se else None
        self.pl_conv = nn.Conv2d(self.max_mid, out_ch, 1, bias=False)
        self.pl_bn = nn.BatchNorm2d(out_ch)
        self.act = _act_fn(act)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
        mid = spec.mid_ch
        y = self.act(self.ib_bn(F.conv2d(x, self.ib_conv.weight[:mid])))
        y = self.act(self.dw_bn(self.dw(y, spec.kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.pl_bn(F.conv2d(y, self.pl_conv.weight[:, :mid]))
        return x + y if self.residual else y

    @torch.no_grad()
    def to_static(self, spec: LayerSpec) -> MBConv:
        """A static `MBConv` computing exactly what ``forward(x, spec)`` computes (in eval mode)."""
        mid = spec.mid_ch
        block = MBConv(spec)
        assert block.inverted_bottleneck is not None
        _weight(block.inverted_bottleneck, 0).copy_(self.ib_conv.weight[:mid])
        self.ib_bn.copy_to(block.inverted_bottleneck[1], mid)
        _weight(block.depthwise, 0).copy_(self.dw.kernel(spec.kernel, mid))
        self.dw_bn.copy_to(block.depthwise[1], mid)
        if self.se is not None:
            assert block.se is not None
            r = se_channels(mid)
            block.se.reduce.weight.copy_(self.se.reduce.weight[:r, :mid])
            _bias(block.se.reduce).copy_(_bias(self.se.reduce)[:r])
            block.se.expand.weight.copy_(self.se.expand.weight[:mid, :r])
            _bias(block.se.expand).copy_(_bias(self.se.expand)[:mid])
        _weight(block.point_linear, 0).copy_(self.pl_conv.weight[:, :mid])
        block.point_linear[1].load_state_dict(self.pl_bn.state_dict())
        return block

    @torch.no_grad()
    def sort_channels(self, *, keep_expands: Sequence[int] = ()) -> None:
        """Reorder expanded channels by importance (L1 norm of the projection weights), most important first.

        The permutation is applied consistently to every tensor indexed by the expanded channel, so the full
        block computes the same function before and after; narrower expand ratios then keep the strongest
        channels (OFA's ``re_organize_middle_weights``).

        ``keep_expands``: expand ratios that were already trained; the first ``width(e)`` channels of each
        stay within that prefix (sorting happens only inside the bands between those widths), so subnets
        trained in an earlier phase keep their channels. OFA does this with ``expand_ratio_stage > 0`` before
        its second elastic-expand phase.
        """
        importance = self.pl_conv.weight.abs().sum(dim=(0, 2, 3))
        bounds = sorted({make_divisible(round(self.in_ch * e)) for e in keep_expands} - {self.max_mid})
        band = torch.zeros_like(importance)
        for b in bounds:
            band[b:] += 1.0
        # sort by band first (stable), then by importance inside a band
        order = torch.argsort(importance - band * (importance.max() + 1.0) * 2.0, descending=True, stable=True)
        self.pl_conv.weight.copy_(self.pl_conv.weight[:, order])
        if self.se is not None:
            self.se.expand.weight.copy_(self.se.expand.weight[order])
            _bias(self.se.expand).copy_(_bias(self.se.expand)[order])
            self.se.reduce.weight.copy_(self.se.reduce.weight[:, order])
            # the SE bottleneck is elastic too: sort its channels by their outgoing weights' L1 norm
            se_imp = self.se.expand.weight.abs().sum(dim=(0, 2, 3))
            se_order = torch.argsort(se_imp, descending=True)
            self.se.reduce.weight.copy_(self.se.reduce.weight[se_order])
            _bias(self.se.reduce).copy_(_bias(self.se.reduce)[se_order])
            self.se.expand.weight.copy_(self.se.expand.weight[:, se_order])
        for bn in (self.dw_bn.bn, self.ib_bn.bn):
            bn.weight.copy_(bn.weight[order])
            bn.bias.copy_(bn.bias[order])
            for name in ("running_mean", "running_var"):
                _buffer(bn, name).copy_(_buffer(bn, name)[order])
        self.dw.weight.copy_(self.dw.weight[order])
        self.ib_conv.weight.copy_(self.ib_conv.weight[order])


class OFASupernet(nn.Module):
    """Elastic MobileNetV3 holding every subnet of ``space`` for the macro-structure ``backbone``."""

    def __init__(self, *, space: SearchSpace, backbone: Backbone) -> None:
        super().__init__()
        if backbone.n_stages != space.n_stages:
            raise ValueError(
                f"backbone has {backbone.n_stages} stages but space {space.name!r} has {space.n_stages}"
            )
        self.space, self.backbone = space, backbone
        ref = layer_specs(backbone, space.largest())
        self.stem = build_layer(ref[0])
        self.first_block = build_layer(ref[1])
        blocks = []
        in_ch = ref[1].out_ch
        for s in range(space.n_stages):
            out_ch = backbone.ch(backbone.stage_widths[s])
            for j in range(space.max_depth):
                blocks.append(
                    DynamicMBConv(
                        in_ch=in_ch,
                        out_ch=out_ch,
                        stride=backbone.stage_strides[s] if j == 0 else 1,
                        act=backbone.stage_acts[s],
                        se=backbone.stage_se[s],
                        space=space,
                    )
                )
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final_expand = build_layer(ref[-2])
        self.head = build_layer(ref[-1], dropout=backbone.dropout)
        self._active: ArchConfig = space.largest()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """MobileNet initialisation plus a zero BN scale at the end of every residual block.

        With zero-init residuals each block starts as the identity, so the deep elastic network trains like a
        shallow one at first, which trains the largest subnet far better after one epoch (figures: docs/design.md).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            assert isinstance(block, DynamicMBConv)
            nn.init.kaiming_normal_(block.dw.weight, mode="fan_out")
            if block.residual:
                nn.init.zeros_(block.pl_bn.weight)

    # ----------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        return {
            "schema_version": SUPERNET_CONFIG_VERSION,
            "space": self.space.to_json(),
            "backbone": self.backbone.to_json(),
        }

    @classmethod
    def build_from_config(cls, config: Mapping[str, Any]) -> OFASupernet:
        if config.get("schema_version") != SUPERNET_CONFIG_VERSION:
            raise ValueError(
                f"supernet config: schema_version {config.get('schema_version')!r} not supported "
                f"(expected {SUPERNET_CONFIG_VERSION})"
            )
        return cls(space=SearchSpace.from_json(config["space"]), backbone=Backbone.from_json(config["backbone"]))

    # ----------------------------------------------------------------- active subnet
    @property
    def active(self) -> ArchConfig:
        return self._active

    @contextlib.contextmanager
    def activate(self, cfg: ArchConfig) -> Iterator[OFASupernet]:
        """Run the body with ``cfg`` as the active sub-network; the previous one is restored afterwards."""
        previous = self._active
        self._active = self.space.canonical(cfg)
        try:
            yield self
        finally:
            self._active = previous

    def _path(self, cfg: ArchConfig) -> list[tuple[LayerSpec, nn.Module]]:
        """Pair each layer of ``layer_specs(cfg)`` with the supernet module that computes it."""
        specs = layer_specs(self.backbone, cfg)
        modules: list[nn.Module] = [self.stem, self.first_block]
        modules += [self.blocks[slot] for _, _, slot in cfg.active_slots()]
        modules += [self.final_expand, self.head]
        return list(zip(specs, modules, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, ())[0]

    def forward_features(
        self, x: torch.Tensor, stages: Collection[int]
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Logits of the active subnet plus the output of each elastic stage in ``stages`` (0-based).

        A stage's output is that of its last active block, (B, stage width, h, h); its shape does not depend
        on the subnet's depth/kernel/expand, so teacher and student maps can be compared directly (feature
        distillation). Stateless: nothing is stored on the module.
        """
        feats: dict[int, torch.Tensor] = {}
        cfg = self._active
        last_slot = {s * cfg.max_depth + d - 1: s for s, d in enumerate(cfg.depths) if s in stages}
        slots = [None, None] + [slot for _, _, slot in cfg.active_slots()] + [None, None]
        for (spec, module), slot in zip(self._path(cfg), slots, strict=True):
            x = module(x, spec) if isinstance(module, DynamicMBConv) else module(x)
            if slot in last_slot:
                feats[last_slot[slot]] = x
        return x, feats

    @torch.no_grad()
    def get_active_subnet(self, cfg: ArchConfig | None = None) -> StaticSubnet:
        """A standalone static network for ``cfg`` (default: the active one) with weights copied."""
        cfg = self._active if cfg is None else self.space.canonical(cfg)
        layers: list[nn.Module] = []
        for spec, module in self._path(cfg):
            if isinstance(module, DynamicMBConv):
                layers.append(module.to_static(spec))
            else:
                static = build_layer(spec, dropout=self.backbone.dropout)
                static.load_state_dict(module.state_dict())
                layers.append(static)
        subnet = StaticSubnet(layers, arch=cfg, backbone=self.backbone)
        return subnet.train(self.training)

    @torch.no_grad()
    def sort_channels(self, *, keep_expands: Sequence[int] = ()) -> None:
        """Importance-sort the expanded channels of every block (before an elastic-expand phase).

        ``keep_expands``: expand ratios trained in earlier phases, whose channel sets must not change (see
        `DynamicMBConv.sort_channels`).
        """
        for block in self.blocks:
            assert isinstance(block, DynamicMBConv)
            block.sort_channels(keep_expands=keep_expands)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

