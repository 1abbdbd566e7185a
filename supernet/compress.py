"""Unstructured magnitude pruning and Deep Compression (Han et al. 2016) of a static subnet, with an exact loader.

Pipeline (Han, Mao & Dally 2016, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding"), on the BN-folded network (`supernet.qat.fold_batchnorm`: the exporters fold BN
too, so one weight tensor and one bias per conv is what a runtime needs):

  1. **Prune**: every *prunable* weight tensor W (conv / linear weights with >= ``min_prunable`` elements) keeps its
     largest-|w| share 1 - s_t; the sparsity s_t rises to the target s over ``prune_steps`` equal steps of the
     fine-tuning (gradual pruning; masks re-applied after every optimizer step so pruned weights stay 0).
  2. **Share**: per weight tensor, k = min(2^bits, #nonzero) centroids c_j over the nonzero weights, linearly
     initialised on [min w, max w] (Han's best initialisation), refined by ``kmeans_iters`` Lloyd iterations, then
     *trained*: the forward uses w = c[idx] * mask, so dL/dc_j = sum over the weights of cluster j of dL/dw.
  3. **Huffman**: the nonzero weights of a tensor, in C order, become pairs (gap, cluster index) where the gap is
     the number of zeros since the previous nonzero; gaps above 2^delta_bits - 1 are split by filler entries
     (gap 2^delta_bits - 1, index k: "a zero here"), as in the paper's relative indexing. The gap stream and the
     index stream are each Huffman coded (canonical codes; code lengths stored).

Artifact (``.hwdc``, no pickle)::

    b"HWDC" | u32 little-endian header length | header (zlib-deflated UTF-8 JSON) | payload

The header has ``schema_version``, ``kind``, the architecture (`ArchConfig` JSON, or `supernet.prune.PrunedArch`
JSON for a structurally pruned subnet), the backbone, the pipeline settings, one entry per tensor (name, shape,
encoding, offsets into the payload, Huffman code lengths) and ``payload_bytes`` / ``payload_sha256``. `load_compressed`
checks the magic, the schema, the length (a truncated file is an error naming it) and the hash (an altered file is
one too) and rebuilds the BN-folded network with weights bit-equal to the shared weights it was written from.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import json
import logging
import math
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from supernet.errors import InputError
from supernet.finetune import FinetuneConfig, kd_finetune, total_steps
from supernet.io import atomic_write_bytes

if TYPE_CHECKING:
    from supernet.data import DataSplits
    from supernet.layers import StaticSubnet

__all__ = [
    "ARTIFACT_KIND",
    "ARTIFACT_SCHEMA_VERSION",
    "CompressedFileError",
    "CompressionInputError",
    "CompressionSummary",
    "DeepCompressionConfig",
    "DeepCompressionResult",
    "LoadedCompressed",
    "MagnitudePruneResult",
    "SizeReport",
    "check_bits",
    "check_sparsity",
    "compress_subnet",
    "deep_compress",
    "encode_model",
    "huffman_code_lengths",
    "huffman_decode",
    "huffman_encode",
    "load_compressed",
    "magnitude_prune",
    "prunable_weights",
    "sparsity_of",
    "write_compressed",
]

log = logging.getLogger(__name__)
MAGIC = b"HWDC"
ARTIFACT_SCHEMA_VERSION = 1
ARTIFACT_KIND = "hwnas-deep-compression"


class CompressionInputError(InputError):
    """A compression setting is out of range; the message names the setting and the allowed range."""


class CompressedFileError(InputError):
    """A compressed artifact cannot be read: wrong magic, unknown schema, truncated, or its hash does not match."""


def check_sparsity(sparsity: float, *, what: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise CompressionInputError(f"{what} {sparsity!r}: expected a share of weights set to zero in [0, 1)")
    return float(sparsity)


def check_bits(bits: int, *, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise CompressionInputError(f"{what} {bits!r}: expected an integer weight bit-width in 1..8 "
                                    "(2^bits shared values per layer)")
    return bits


# --------------------------------------------------------------------------- magnitude pruning
def prunable_weights(model: nn.Module, *, min_prunable: int) -> dict[str, torch.Tensor]:
    """Conv / linear weights with at least ``min_prunable`` elements, by parameter name (the stem's and SE's few
    weights, and depthwise filters of small blocks, stay dense: pruning them costs accuracy and saves little)."""
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() >= min_prunable:
            out[f"{name}.weight"] = m.weight
    return out


@torch.no_grad()
def _magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Per tensor: keep the ``round((1 - s) n)`` largest |w| (ties broken by position)."""
    masks = {}
    for name, w in weights.items():
        n = w.numel()
        keep = n - round(sparsity * n)
        mask = torch.zeros(n, dtype=torch.bool)
        if keep > 0:
            mask[w.detach().abs().flatten().topk(keep).indices] = True
        masks[name] = mask.view_as(w)
    return masks


def sparsity_of(model: nn.Module, *, min_prunable: int = 0) -> float:
    """Share of exact zeros among the conv / linear weights with >= ``min_prunable`` elements."""
    ws = list(prunable_weights(model, min_prunable=min_prunable).values())
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / total if total else 0.0


@dataclass(frozen=True)
class MagnitudePruneResult:
    """The BN-folded, magnitude-pruned network (eval mode; pruned weights exactly 0) and its masks."""

    model: nn.Module
    masks: dict[str, torch.Tensor]
    sparsity: float
    finetune: dict[str, Any] | None


def magnitude_prune(
    model: StaticSubnet,
    data: DataSplits | None,
    *,
    sparsity: float,
    finetune: FinetuneConfig | None,
    prune_steps: int = 3,
    min_prunable: int = 1024,
    teacher: nn.Module | None = None,
) -> MagnitudePruneResult:
    """Prune a BN-folded copy of ``model`` (eval mode, BN recalibrated; not modified) to ``sparsity`` per prunable
    tensor, gradually over the first half of the fine-tuning (``prune_steps`` increments), distilling from
    ``teacher`` (default: ``model``). ``finetune`` None prunes one-shot without training (``data`` may be None)."""
    from supernet.qat import fold_batchnorm

    s = check_sparsity(sparsity)
    if prune_steps < 1:
        raise CompressionInputError(f"prune_steps {prune_steps!r}: expected an integer >= 1")
    student = fold_batchnorm(model)
    weights = prunable_weights(student, min_prunable=min_prunable)
    if finetune is None:
        masks = _magnitude_masks(weights, s)
        with torch.no_grad():
            for k, w in weights.items():
                w.mul_(masks[k])
        return MagnitudePruneResult(model=student.eval(), masks=masks, sparsity=s, finetune=None)
    if data is None:
        raise ValueError("magnitude_prune: fine-tuning needs data")
    t = teacher if teacher is not None else copy.deepcopy(model).eval().requires_grad_(False)
    ramp_end = max(1, total_steps(len(data.train), finetune) // 2)

    def level_after(steps_done: int) -> float:  # sparsity in force after ``steps_done`` optimizer steps
        return s * min(prune_steps, 1 + steps_done * prune_steps // ramp_end) / prune_steps

    state: dict[str, Any] = {"level": level_after(0), "masks": _magnitude_masks(weights, level_after(0))}

    def apply(step: int) -> None:
        level = level_after(step + 1)
        if level != state["level"]:
            state["level"], state["masks"] = level, _magnitude_masks(weights, level)
        with torch.no_grad():
            for k, w in weights.items():
                w.mul_(state["masks"][k])

    apply(-1)
    res = kd_finetune(student, t, data, config=finetune, resolution=model.arch.resolution, after_step=apply)
    final = _magnitude_masks(weights, s)  # the target level, also when a very short run ended before the ramp did
    with torch.no_grad():
        for k, w in weights.items():
            w.mul_(final[k])
    return MagnitudePruneResult(model=student.eval(), masks=final, sparsity=s, finetune=res.to_json())


# --------------------------------------------------------------------------- weight sharing
class _Shared(nn.Module):
    """Parametrization ``centroids -> centroids[idx] * mask`` (the original parameter *is* the centroid vector)."""

    def __init__(self, idx: torch.Tensor, mask: torch.Tensor, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("idx", idx)
        self.register_buffer("mask", mask)
        self.shape = shape
        self.init_centroids: torch.Tensor | None = None

    def forward(self, centroids: torch.Tensor) -> torch.Tensor:
        idx, mask = self.idx, self.mask
        assert isinstance(idx, torch.Tensor) and isinstance(mask, torch.Tensor)
        return torch.where(mask, centroids[idx], 0.0).view(self.shape)

    def right_inverse(self, _w: torch.Tensor) -> torch.Tensor:
        assert self.init_centroids is not None
        return self.init_centroids


@torch.no_grad()
def _kmeans_1d(values: torch.Tensor, k: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars, linear initialisation on [min, max]; returns (centroids (k,), idx (n,))."""
    c = _linear_init(values, k)
    idx = torch.zeros(values.numel(), dtype=torch.long)
    for _ in range(max(1, iters)):
        idx = _assign(values, c)
        sums = torch.zeros(k).index_add_(0, idx, values)
        counts = torch.zeros(k).index_add_(0, idx, torch.ones_like(values))
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    return c, _assign(values, c)


def _linear_init(values: torch.Tensor, k: int) -> torch.Tensor:
    """k values spaced linearly over the weights' range, skipping the gap around 0 that pruning leaves: the
    negative and the positive part each get a share of k proportional to their span (at least 1 if present)."""
    if k == 1:
        return values.mean().reshape(1)
    neg, pos = values[values < 0], values[values > 0]
    if neg.numel() == 0 or pos.numel() == 0:
        return torch.linspace(float(values.min()), float(values.max()), k, dtype=torch.float32)
    span_n, span_p = float(neg.max() - neg.min()), float(pos.max() - pos.min())
    k_n = min(k - 1, max(1, round(k * span_n / max(span_n + span_p, 1e-30))))
    return torch.cat([torch.linspace(float(neg.min()), float(neg.max()), k_n),
                      torch.linspace(float(pos.min()), float(pos.max()), k - k_n)]).to(torch.float32)


def _assign(values: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(c)
    cs = c[order]
    mid = (cs[1:] + cs[:-1]) / 2
    return order[torch.bucketize(values, mid)]


def _attach_sharing(model: nn.Module, *, bits: int, kmeans_iters: int) -> list[tuple[nn.Module, str]]:
    """Replace every conv / linear weight of ``model`` by shared centroids (parametrization); return the modules."""
    k_max = 2 ** bits
    done: list[tuple[nn.Module, str]] = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        w = m.weight.detach().flatten()
        mask = w != 0
        nz = w[mask]
        k = max(1, min(k_max, int(nz.numel())))
        if nz.numel() == 0:
            c, idx_nz = torch.zeros(1), torch.zeros(0, dtype=torch.long)
        else:
            c, idx_nz = _kmeans_1d(nz, k, kmeans_iters)
        idx = torch.zeros(w.numel(), dtype=torch.long)
        idx[mask] = idx_nz
        p = _Shared(idx, mask, m.weight.shape)
        p.init_centroids = c.clone()
        parametrize.register_parametrization(m, "weight", p, unsafe=True)
        done.append((m, name))
    return done


# --------------------------------------------------------------------------- Huffman coding
def huffman_code_lengths(counts: Mapping[int, int]) -> dict[int, int]:
    """Optimal prefix-code lengths per symbol (one symbol alone gets length 1). Deterministic for equal counts."""
    syms = sorted(s for s, c in counts.items() if c > 0)
    if not syms:
        return {}
    if len(syms) == 1:
        return {syms[0]: 1}
    heap: list[tuple[int, int, list[int]]] = [(counts[s], s, [s]) for s in syms]
    heapq.heapify(heap)
    lengths = dict.fromkeys(syms, 0)
    tie = max(syms) + 1
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, a + b))
        tie += 1
    return lengths


def _canonical_codes(lengths: Mapping[int, int]) -> dict[int, str]:
    """Canonical Huffman codes: symbols sorted by (length, symbol) get consecutive codes (DEFLATE's rule)."""
    codes: dict[int, str] = {}
    code, prev = 0, 0
    for s, ln in sorted(lengths.items(), key=lambda kv: (kv[1], kv[0])):
        code <<= ln - prev
        codes[s] = format(code, f"0{ln}b")
        code += 1
        prev = ln
    return codes


def huffman_encode(symbols: Sequence[int] | np.ndarray) -> tuple[bytes, int, dict[int, int]]:
    """Encode ``symbols``: (bytes, number of bits, code length per symbol). Bits are MSB first, zero padded."""
    arr = np.asarray(symbols, dtype=np.int64)
    if arr.size == 0:
        return b"", 0, {}
    vals, cnt = np.unique(arr, return_counts=True)
    lengths = huffman_code_lengths({int(v): int(c) for v, c in zip(vals, cnt)})
    codes = _canonical_codes(lengths)
    table = np.empty(int(vals.max()) + 1, dtype=object)
    for s, c in codes.items():
        table[s] = c
    bits = "".join(table[arr].tolist())
    n = len(bits)
    padded = bits + "0" * (-n % 8)
    data = int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""
    return data, n, lengths


def huffman_decode(data: bytes, n_bits: int, lengths: Mapping[int, int], count: int) -> np.ndarray:
    """Inverse of `huffman_encode`: ``count`` symbols from the first ``n_bits`` bits of ``data``."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if len(data) * 8 < n_bits:
        raise CompressedFileError(f"Huffman stream: {len(data) * 8} bits stored, {n_bits} expected")
    codes = _canonical_codes(lengths)
    lookup = {c: s for s, c in codes.items()}
    sizes = sorted(set(lengths.values()))
    bits = bin(int.from_bytes(data, "big"))[2:].zfill(len(data) * 8)[:n_bits]
    out = np.empty(count, dtype=np.int64)
    pos = 0
    for i in range(count):
        for ln in sizes:
            s = lookup.get(bits[pos : pos + ln])
            if s is not None:
                out[i] = s
                pos += ln
                break
        else:
            raise CompressedFileError(f"Huffman stream: no code matches at bit {pos} (symbol {i} of {count})")
    if pos != n_bits:
        raise CompressedFileError(f"Huffman stream: decoded {pos} bits of {n_bits}")
    return out


def _lengths_bytes(lengths: Mapping[int, int], alphabet: int) -> bytes:
    """Code length per symbol 0..alphabet-1 as one byte each (0 = symbol absent)."""
    out = bytearray(alphabet)
    for sym, ln in lengths.items():
        if ln > 255:
            raise ValueError(f"Huffman code of {ln} bits for symbol {sym}: longer than a byte can state")
        out[sym] = ln
    return bytes(out)


def _sparse_pairs(idx: np.ndarray, mask: np.ndarray, *, filler: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, indices) of the nonzero positions of a flattened tensor, with filler entries for gaps > ``cap``."""
    pos = np.flatnonzero(mask)
    gaps = np.diff(pos, prepend=-1) - 1
    out_g: list[int] = []
    out_i: list[int] = []
    for g, s in zip(gaps.tolist(), idx[pos].tolist()):
        while g > cap:
            out_g.append(cap)
            out_i.append(filler)
            g -= cap + 1
        out_g.append(g)
        out_i.append(s)
    return np.asarray(out_g, dtype=np.int64), np.asarray(out_i, dtype=np.int64)


def _dense_from_pairs(gaps: np.ndarray, indices: np.ndarray, centroids: np.ndarray, *, n: int,
                      filler: int) -> np.ndarray:
    pos = np.cumsum(gaps + 1) - 1
    keep = indices != filler
    if pos.size and int(pos[-1]) >= n:
        raise CompressedFileError(f"sparse index stream runs past the tensor ({int(pos[-1])} >= {n})")
    out = np.zeros(n, dtype=np.float32)
    out[pos[keep]] = centroids[indices[keep]]
    return out


# --------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True, kw_only=True)
class DeepCompressionConfig:
    """Deep Compression of one subnet (module docstring).

    Attributes:
        sparsity: target share of zeros in every prunable weight tensor, [0, 1).
        bits: index bits per weight, 1..8 (2^bits shared values per tensor).
        delta_bits: largest gap between nonzeros without a filler entry is 2^delta_bits - 1.
        prune_steps: sparsity increments during the pruning fine-tune.
        min_prunable: tensors with fewer weights stay dense (still shared and coded).
        kmeans_iters: Lloyd iterations before the centroids are trained.
        finetune: fine-tuning after pruning (None: one-shot pruning, no training).
        centroid_finetune: training of the shared centroids (None: k-means centroids as they are).
    """

    sparsity: float = 0.8
    bits: int = 5
    delta_bits: int = 5
    prune_steps: int = 3
    min_prunable: int = 1024
    kmeans_iters: int = 20
    finetune: FinetuneConfig | None = field(default_factory=FinetuneConfig)
    centroid_finetune: FinetuneConfig | None = field(
        default_factory=lambda: FinetuneConfig(epochs=0.5, lr=1e-4, augment=False))

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        check_bits(self.bits)
        if isinstance(self.delta_bits, bool) or not isinstance(self.delta_bits, int) or not 1 <= self.delta_bits <= 16:
            raise CompressionInputError(f"delta_bits {self.delta_bits!r}: expected an integer in 1..16")
        for name in ("prune_steps", "min_prunable", "kmeans_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CompressionInputError(f"{name} {v!r}: expected an integer >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SizeReport:
    """Bytes after each stage of the pipeline (Han et al.'s accounting) and of the written file.

    ``dense_fp32_bytes``: all parameters as float32 (BN folded). ``pruned_bytes``: nonzero weights as float32 plus
    their gaps at ``delta_bits`` each (filler entries included), other parameters float32. ``shared_bytes``: the
    same with ``bits`` per nonzero weight plus the float32 codebooks. ``huffman_bytes``: the coded streams plus
    codebooks and dense parameters. ``file_bytes``: the artifact as written (header included). Ratios are
    ``reference_bytes / file_bytes`` where the reference is the fp32 model file when given.
    """

    dense_fp32_bytes: int
    pruned_bytes: int
    shared_bytes: int
    huffman_bytes: int
    header_bytes: int
    file_bytes: int
    weights: int
    nonzero_weights: int
    filler_entries: int
    reference_file_bytes: int | None = None

    @property
    def ratio_vs_dense(self) -> float:
        return self.dense_fp32_bytes / self.file_bytes

    @property
    def ratio_vs_reference(self) -> float | None:
        return None if self.reference_file_bytes is None else self.reference_file_bytes / self.file_bytes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio_vs_dense": self.ratio_vs_dense, "ratio_vs_reference": self.ratio_vs_reference}


@dataclass(frozen=True)
class DeepCompressionResult:
    """``pruned``: the magnitude-pruned (not shared) network; ``model``: pruned + shared weights (plain float
    tensors, what the artifact stores exactly); ``payload``: the artifact's bytes; ``size``: the stage report."""

    pruned: nn.Module
    model: nn.Module
    payload: bytes
    size: SizeReport
    config: dict[str, Any]
    finetune: dict[str, Any]


def deep_compress(
    model: StaticSubnet,
    data: DataSplits | None,
    *,
    config: DeepCompressionConfig,
    reference_file_bytes: int | None = None,
    pruned: MagnitudePruneResult | None = None,
) -> DeepCompressionResult:
    """Prune, share and code ``model`` (BN-recalibrated static subnet, pruned or not; not modified).

    ``pruned``: a `magnitude_prune` result of ``model`` at ``config.sparsity`` to start from (skips stage 1, e.g.
    when the pruned network is also measured on its own)."""
    if pruned is not None and abs(pruned.sparsity - config.sparsity) > 1e-12:
        raise ValueError(f"deep_compress: the given pruned model has sparsity {pruned.sparsity}, the config "
                         f"{config.sparsity}")
    pr = pruned or magnitude_prune(model, data, sparsity=config.sparsity, finetune=config.finetune,
                                   prune_steps=config.prune_steps, min_prunable=config.min_prunable)
    shared = copy.deepcopy(pr.model)
    mods = _attach_sharing(shared, bits=config.bits, kmeans_iters=config.kmeans_iters)
    info: dict[str, Any] = {"prune": pr.finetune}
    if config.centroid_finetune is not None:
        if data is None:
            raise ValueError("deep_compress: centroid training needs data")
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        cents: list[nn.Parameter] = [m.parametrizations.weight.original for m, _ in mods]  # type: ignore[union-attr,misc]
        biases: list[nn.Parameter] = [m.bias for m, _ in mods if m.bias is not None]  # type: ignore[misc]
        res = kd_finetune(shared, teacher, data, config=config.centroid_finetune, resolution=model.arch.resolution,
                          params=[*cents, *biases])
        info["centroids"] = res.to_json()
    for m, _ in mods:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    shared.eval()
    for p in shared.parameters():
        p.grad = None  # the centroids' gradients would otherwise stay on the weights (another shape)
        p.requires_grad_(False)
    payload, size = encode_model(shared, model, config=config, reference_file_bytes=reference_file_bytes)
    return DeepCompressionResult(pruned=pr.model, model=shared, payload=payload, size=size,
                                 config=config.to_json(), finetune=info)


def _arch_json(model: StaticSubnet) -> dict[str, Any]:
    from supernet.prune import PrunedSubnet

    if isinstance(model, PrunedSubnet):
        return {"pruned_arch": model.pruned_arch.to_json()}
    return {"arch": model.arch.to_json()}


def encode_model(
    shared: nn.Module, source: StaticSubnet, *, config: DeepCompressionConfig, reference_file_bytes: int | None = None,
) -> tuple[bytes, SizeReport]:
    """The artifact bytes of a BN-folded network whose conv / linear weights take at most 2^bits values each
    (plus zeros), and its size report. ``source`` supplies the architecture and backbone."""
    k_max = 2 ** config.bits
    cap = 2 ** config.delta_bits - 1
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    offset = 0
    dense = pruned = sharedb = huff = 0
    n_w = n_nz = n_fill = 0

    def add(blob: bytes) -> tuple[int, int]:
        nonlocal offset
        blobs.append(blob)
        start = offset
        offset += len(blob)
        return start, len(blob)

    weight_names = {f"{n}.weight" for n, m in shared.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, t in shared.state_dict().items():
        arr = t.detach().cpu().numpy()
        dense += 4 * arr.size
        if name not in weight_names:
            raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            off, ln = add(raw)
            tensors.append({"name": name, "shape": list(arr.shape), "encoding": "raw-f32", "offset": off, "bytes": ln})
            pruned += ln
            sharedb += ln
            huff += ln
            continue
        flat = arr.reshape(-1).astype(np.float32)
        mask = flat != 0
        values = np.unique(flat[mask])
        if values.size > k_max:
            raise ValueError(f"encode_model: {name} has {values.size} distinct nonzero values, more than 2^{config.bits}")
        centroids = values.astype("<f4")
        idx = np.searchsorted(centroids, flat).astype(np.int64)
        idx[~mask] = 0
        filler = int(centroids.size)
        gaps, ids = _sparse_pairs(idx, mask, filler=filler, cap=cap)
        g_data, g_bits, g_len = huffman_encode(gaps)
        i_data, i_bits, i_len = huffman_encode(ids)
        c_off, c_ln = add(centroids.tobytes())
        g_off, _ = add(g_data)
        i_off, _ = add(i_data)
        gl_off, gl_ln = add(_lengths_bytes(g_len, cap + 1))
        il_off, il_ln = add(_lengths_bytes(i_len, filler + 1))
        nz = int(mask.sum())
        n_w += flat.size
        n_nz += nz
        n_fill += int(ids.size - nz)
        pruned += math.ceil((32 * nz + config.delta_bits * ids.size) / 8)
        sharedb += math.ceil(((config.bits + config.delta_bits) * ids.size) / 8) + c_ln
        huff += len(g_data) + len(i_data) + c_ln + gl_ln + il_ln
        tensors.append({
            "name": name, "shape": list(arr.shape), "encoding": "shared-huffman", "entries": int(ids.size),
            "codebook": [c_off, int(centroids.size)],
            "gaps": [g_off, len(g_data), g_bits, gl_off, gl_ln],
            "indices": [i_off, len(i_data), i_bits, il_off, il_ln],
        })
    payload = b"".join(blobs)
    header = {
        "schema_version": ARTIFACT_SCHEMA_VERSION, "kind": ARTIFACT_KIND, **_arch_json(source),
        "backbone": source.backbone.to_json(), "bn_folded": True,
        "pipeline": {"sparsity": config.sparsity, "bits": config.bits, "delta_bits": config.delta_bits,
                     "min_prunable": config.min_prunable},
        "tensors": tensors, "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = zlib.compress(json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8"), 9)
    blob = MAGIC + struct.pack("<I", len(head)) + head + payload
    size = SizeReport(dense_fp32_bytes=dense, pruned_bytes=pruned, shared_bytes=sharedb, huffman_bytes=huff,
                      header_bytes=len(MAGIC) + 4 + len(head), file_bytes=len(blob), weights=n_w,
                      nonzero_weights=n_nz, filler_entries=n_fill, reference_file_bytes=reference_file_bytes)
    return blob, size


def write_compressed(result: DeepCompressionResult, path: str | os.PathLike[str]) -> Path:
    """Write the artifact atomically; returns the path."""
    p = Path(path)
    atomic_write_bytes(p, result.payload)
    return p


def _read_header(path: Path, blob: bytes) -> tuple[dict[str, Any], bytes]:
    if len(blob) < len(MAGIC) + 4 or blob[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(f"compressed model {str(path)!r}: not an hwnas Deep Compression file "
                                  f"(expected it to start with {MAGIC!r})")
    (n_head,) = struct.unpack("<I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if len(blob) < start + n_head:
        raise CompressedFileError(f"compressed model {str(path)!r} is truncated: {len(blob)} bytes, the header alone "
                                  f"needs {start + n_head}")
    try:
        header = json.loads(zlib.decompress(blob[start : start + n_head]).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompressedFileError(f"compressed model {str(path)!r}: unreadable header ({e})") from None
    if not isinstance(header, dict) or header.get("kind") != ARTIFACT_KIND:
        raise CompressedFileError(f"compressed model {str(path)!r}: header kind is not {ARTIFACT_KIND!r}")
    if header.get("schema_version") != ARTIFACT_SCHEMA_VERSION:
        raise CompressedFileError(f"compressed model {str(path)!r}: schema_version {header.get('schema_version')!r} "
                                  f"is not supported (this hwnas reads version {ARTIFACT_SCHEMA_VERSION})")
    payload = blob[start + n_head :]
    want = int(header["payload_bytes"])
    if len(payload) != want:
        what = "truncated" if len(payload) < want else "longer than its header says"
        raise CompressedFileError(f"compressed model {str(path)!r} is {what}: payload of {len(payload)} bytes, "
                                  f"header says {want}")
    got = hashlib.sha256(payload).hexdigest()
    if got != header["payload_sha256"]:
        raise CompressedFileError(f"compressed model {str(path)!r}: payload sha256 {got} does not match the header's "
                                  f"{header['payload_sha256']} (the file was altered or damaged)")
    return header, payload


@dataclass(frozen=True)
class LoadedCompressed:
    """A restored network (BN folded, eval mode) and the artifact's header."""

    model: nn.Module
    header: dict[str, Any]
    file_sha256: str


def load_compressed(path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> LoadedCompressed:
    """Restore the network of an artifact written by `write_compressed` (weights bit-equal to the shared ones).

    ``expected_sha256`` (e.g. from a bundle manifest or the size report) is checked against the whole file."""
    from supernet.layers import Backbone, build_static_model
    from supernet.prune import PrunedArch, build_pruned_model
    from supernet.qat import fold_batchnorm
    from supernet.space import ArchConfig

    p = Path(path)
    if not p.is_file():
        raise CompressedFileError(f"compressed model {str(p)!r} does not exist or is not a file")
    blob = p.read_bytes()
    file_sha = hashlib.sha256(blob).hexdigest()
    if expected_sha256 is not None and file_sha != expected_sha256:
        raise CompressedFileError(f"compressed model {str(p)!r}: sha256 {file_sha} is not the expected "
                                  f"{expected_sha256}")
    header, payload = _read_header(p, blob)
    try:
        backbone = Backbone.from_json(header["backbone"])
        if "pruned_arch" in header:
            net: nn.Module = build_pruned_model(backbone, PrunedArch.from_json(header["pruned_arch"]))
        else:
            net = build_static_model(backbone, ArchConfig.from_json(header["arch"]))
        net = fold_batchnorm(net.eval())
        state: dict[str, torch.Tensor] = {}
        for t in header["tensors"]:
            shape = tuple(t["shape"])
            n = int(np.prod(shape)) if shape else 1
            if t["encoding"] == "raw-f32":
                arr = np.frombuffer(payload, dtype="<f4", count=n, offset=t["offset"]).copy()
            elif t["encoding"] == "shared-huffman":
                c_off, k = t["codebook"]
                cents = np.frombuffer(payload, dtype="<f4", count=k, offset=c_off).copy()
                streams = []
                for key in ("gaps", "indices"):
                    off, nbytes, nbits, l_off, l_len = t[key]
                    lengths = {i: int(v) for i, v in enumerate(payload[l_off : l_off + l_len]) if v}
                    streams.append(huffman_decode(payload[off : off + nbytes], nbits, lengths, t["entries"]))
                arr = _dense_from_pairs(streams[0], streams[1], cents, n=n, filler=k)
            else:
                raise CompressedFileError(f"compressed model {str(p)!r}: tensor {t['name']!r} has unknown encoding "
                                          f"{t['encoding']!r}")
            state[t["name"]] = torch.from_numpy(arr.reshape(shape))
        net.load_state_dict(state, strict=True)
    except CompressedFileError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CompressedFileError(f"compressed model {str(p)!r}: inconsistent contents ({type(e).__name__}: {e})") from e
    return LoadedCompressed(model=net.eval(), header=header, file_sha256=file_sha)


# --------------------------------------------------------------------------- one subnet, end to end (the CLI's call)
@dataclass(frozen=True)
class CompressionSummary:
    """What `compress_subnet` wrote and measured. Accuracies are top-1 on ``split`` (held out)."""

    artifact: str
    artifact_sha256: str
    report: str
    size: SizeReport
    top1_fp32: float
    top1_compressed: float
    split: str
    eval_images: int
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "artifact_sha256": self.artifact_sha256, "report": self.report,
                "size": self.size.to_json(), "top1_fp32": self.top1_fp32, "top1_compressed": self.top1_compressed,
                "split": self.split, "eval_images": self.eval_images, "config": self.config}


def compress_subnet(
    model: StaticSubnet,
    data: DataSplits,
    *,
    config: DeepCompressionConfig,
    out_dir: str | os.PathLike[str],
    name: str,
    split: str = "test",
    max_eval_images: int | None = None,
) -> CompressionSummary:
    """Deep-compress ``model`` and write ``out_dir/<name>.hwdc`` plus ``out_dir/<name>.hwdc.json`` (the size report:
    bytes per stage, ratios against the dense parameters and the fp32 ONNX file, the artifact's sha256, accuracy of
    the fp32 and the restored model). The written file is read back with `load_compressed` before anything is
    reported, so the numbers are the restored model's."""
    import tempfile

    from supernet.export import export_onnx
    from supernet.io import atomic_write_json, sha256_file
    from supernet.quantize import split_arrays

    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="hwnas-compress-") as tmp:
        ref_bytes = export_onnx(model, Path(tmp) / "fp32.onnx", input_shape=model.input_shape).stat().st_size
    res = deep_compress(model, data, config=config, reference_file_bytes=ref_bytes)
    path = write_compressed(res, out / f"{name}.hwdc")
    loaded = load_compressed(path)
    xs, ys = split_arrays(data, split=split, resolution=model.arch.resolution, max_images=max_eval_images)
    with torch.no_grad():
        top = [float((torch.cat([m(torch.from_numpy(xs[i : i + 256])) for i in range(0, len(xs), 256)])
                      .argmax(1).numpy() == ys).mean()) for m in (model.eval(), loaded.model)]
    summary = CompressionSummary(
        artifact=str(path), artifact_sha256=sha256_file(path), report=str(out / f"{name}.hwdc.json"),
        size=res.size, top1_fp32=top[0], top1_compressed=top[1], split=split, eval_images=len(xs),
        config={"deep_compression": res.config, "finetune": res.finetune})
    atomic_write_json(summary.report, {"schema_version": 1, **summary.to_json()})
    return summary
