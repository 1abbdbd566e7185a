"""Magnitude pruning, Deep Compression (sharing + Huffman), the artifact and its loader, binarized weights."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from supernet.compress import (
    CompressedFileError,
    CompressionInputError,
    DeepCompressionConfig,
    _dense_from_pairs,
    _sparse_pairs,
    deep_compress,
    huffman_decode,
    huffman_encode,
    load_compressed,
    magnitude_prune,
    prunable_weights,
    sparsity_of,
    write_compressed,
)
from supernet.finetune import FinetuneConfig
from supernet.layers import StaticSubnet

TINY_FT = FinetuneConfig(epochs=0.25, batch_size=32, max_train_images=256, bn_images=0)


@pytest.fixture(scope="module")
def compressed(tiny_trained: tuple[StaticSubnet, object], tmp_path_factory: pytest.TempPathFactory) -> tuple:
    model, data = tiny_trained
    cfg = DeepCompressionConfig(sparsity=0.8, bits=4, finetune=TINY_FT,
                                centroid_finetune=FinetuneConfig(epochs=0.1, max_train_images=256, bn_images=0))
    res = deep_compress(model, data, config=cfg)  # type: ignore[arg-type]
    path = write_compressed(res, tmp_path_factory.mktemp("dc") / "m.hwdc")
    return res, path, cfg


@pytest.mark.parametrize("symbols", [[3] * 17, [0, 1, 1, 2, 2, 2, 2, 9], list(np.random.default_rng(0).geometric(0.3, 2000))])
def test_huffman_round_trip_and_near_entropy(symbols: list[int]) -> None:
    data, n_bits, lengths = huffman_encode(symbols)
    out = huffman_decode(data, n_bits, lengths, len(symbols))
    assert out.tolist() == [int(s) for s in symbols]
    counts = Counter(int(s) for s in symbols)
    p = np.asarray(list(counts.values())) / len(symbols)
    entropy_bits = float(-(p * np.log2(p)).sum()) * len(symbols)
    assert entropy_bits <= n_bits <= entropy_bits + len(symbols)  # optimal prefix code: H <= L < H + 1 per symbol
    assert sum(2.0 ** -ln for ln in lengths.values()) <= 1.0 + 1e-12  # Kraft: a prefix code


def test_sparse_pairs_round_trip_with_fillers() -> None:
    rng = np.random.default_rng(1)
    n = 500
    mask = rng.random(n) < 0.05
    mask[[0, n - 1]] = [False, True]
    mask[100:300] = False  # a gap far above the cap: filler entries
    cents = np.asarray([-0.5, 0.25, 1.0], dtype=np.float32)
    idx = rng.integers(0, 3, n)
    gaps, ids = _sparse_pairs(idx, mask, filler=3, cap=7)
    assert gaps.max() <= 7 and (ids == 3).sum() >= 200 // 8
    dense = _dense_from_pairs(gaps, ids, cents, n=n, filler=3)
    want = np.where(mask, cents[idx], 0.0).astype(np.float32)
    assert np.array_equal(dense, want)


def test_magnitude_pruning_hits_the_target_per_tensor(tiny_trained: tuple[StaticSubnet, object]) -> None:
    model, data = tiny_trained
    res = magnitude_prune(model, data, sparsity=0.7, finetune=TINY_FT, min_prunable=256)  # type: ignore[arg-type]
    for name, w in prunable_weights(res.model, min_prunable=256).items():
        zeros = int((w == 0).sum())
        assert zeros == round(0.7 * w.numel()), name
        kept = w.detach()[w != 0].abs()
        assert torch.equal(res.masks[name], w != 0)
        assert kept.numel() == 0 or float(kept.min()) > 0
    assert abs(sparsity_of(res.model, min_prunable=256) - 0.7) < 0.01
    assert res.finetune is not None and res.finetune["steps"] >= 1


def test_restored_model_is_bit_equal(compressed: tuple, tiny_val_inputs: np.ndarray) -> None:
    res, path, cfg = compressed
    loaded = load_compressed(path)
    a, b = res.model.state_dict(), loaded.model.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.float32
        assert torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)), k  # bit-equal, sign of zero included
    x = torch.from_numpy(tiny_val_inputs[:16])
    with torch.no_grad():
        assert torch.equal(res.model(x), loaded.model(x))
    assert path.stat().st_size == res.size.file_bytes
    assert loaded.header["pipeline"] == {"sparsity": 0.8, "bits": 4, "delta_bits": cfg.delta_bits,
                                         "min_prunable": cfg.min_prunable}


def test_shared_weights_and_sparsity(compressed: tuple) -> None:
    res, _, cfg = compressed
    for name, m in res.model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nonzero = torch.unique(m.weight[m.weight != 0])
            assert nonzero.numel() <= 2 ** cfg.bits, name
    assert sparsity_of(res.model, min_prunable=cfg.min_prunable) >= 0.8 - 0.01
    # the centroids were trained after k-means: the shared values are not the k-means means of the pruned weights
    s = res.size
    assert s.dense_fp32_bytes > s.pruned_bytes > s.shared_bytes >= s.huffman_bytes
    assert s.file_bytes == s.huffman_bytes + s.header_bytes
    assert s.nonzero_weights <= (1 - 0.8) * s.weights + 1e4  # small tensors stay dense
    assert s.ratio_vs_dense > 5


def test_centroid_training_moves_the_centroids(tiny_trained: tuple[StaticSubnet, object]) -> None:
    model, data = tiny_trained
    base = DeepCompressionConfig(sparsity=0.5, bits=3, finetune=None, centroid_finetune=None)
    trained = DeepCompressionConfig(sparsity=0.5, bits=3, finetune=None,
                                    centroid_finetune=FinetuneConfig(epochs=0.25, max_train_images=256, lr=1e-3,
                                                                     bn_images=0))
    a = deep_compress(model, data, config=base).model  # type: ignore[arg-type]
    b = deep_compress(model, data, config=trained).model  # type: ignore[arg-type]
    w_a, w_b = a.state_dict(), b.state_dict()
    key = next(k for k in w_a if k.endswith("feature_mix.weight"))
    assert torch.equal(w_a[key] == 0, w_b[key] == 0)  # same pruning and assignment
    assert not torch.equal(torch.unique(w_a[key]), torch.unique(w_b[key]))  # other shared values
    assert torch.unique(w_b[key]).numel() <= 2 ** 3 + 1


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_range_is_refused(bad: float) -> None:
    with pytest.raises(CompressionInputError, match=rf"sparsity {bad!r}.*\[0, 1\)"):
        DeepCompressionConfig(sparsity=bad)


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True])
def test_bits_outside_range_are_refused(bad: object) -> None:
    with pytest.raises(CompressionInputError, match=rf"bits {bad!r}.*1\.\.8"):
        DeepCompressionConfig(bits=bad)  # type: ignore[arg-type]


def test_truncated_altered_or_foreign_files_are_refused(compressed: tuple, tmp_path: Path) -> None:
    _, path, _ = compressed
    blob = path.read_bytes()
    cut = tmp_path / "cut.hwdc"
    cut.write_bytes(blob[: len(blob) - 10])
    with pytest.raises(CompressedFileError, match=r"cut\.hwdc.*truncated"):
        load_compressed(cut)
    cut.write_bytes(blob[:20])
    with pytest.raises(CompressedFileError, match=r"cut\.hwdc.*truncated"):
        load_compressed(cut)
    flipped = bytearray(blob)
    flipped[-5] ^= 0x01
    alt = tmp_path / "alt.hwdc"
    alt.write_bytes(bytes(flipped))
    with pytest.raises(CompressedFileError, match=r"alt\.hwdc.*sha256"):
        load_compressed(alt)
    other = tmp_path / "other.hwdc"
    other.write_bytes(b"PK\x03\x04" + blob[4:])
    with pytest.raises(CompressedFileError, match=r"other\.hwdc.*not an hwnas Deep Compression file"):
        load_compressed(other)
    with pytest.raises(CompressedFileError, match=r"m\.hwdc.*not the expected"):
        load_compressed(path, expected_sha256="0" * 64)
    with pytest.raises(CompressedFileError, match="does not exist"):
        load_compressed(tmp_path / "missing.hwdc")


def test_binarized_weights_are_sign_times_mean_magnitude(tiny_trained: tuple[StaticSubnet, object]) -> None:
    from supernet.qat import FakeQuantSpec, describe_spec, fold_batchnorm, simulate_quantized

    model, _ = tiny_trained
    sim = simulate_quantized(model, spec=FakeQuantSpec(weight_bits=1, act_bits=None))
    folded = fold_batchnorm(model)
    ref = dict(folded.named_modules())
    for name, m in sim.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w, w0 = m.weight.detach(), ref[name].weight.detach()
            alpha = w0.abs().flatten(1).mean(1)
            want = alpha.view(-1, *([1] * (w0.dim() - 1))) * torch.where(w0 >= 0, 1.0, -1.0)
            assert torch.allclose(w, want, rtol=1e-6, atol=1e-12), name
    assert describe_spec(FakeQuantSpec(weight_bits=1, act_bits=None)) == "w1-pc"
    assert math.isfinite(float(sim(torch.zeros(1, 1, 24, 24)).sum()))
