"""Shared fixtures of the supernet tests: one tiny subnet briefly trained on digits (used read-only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from supernet.data import iterate_batches, load_dataset
from supernet.evaluate import calibration_batches, recalibrate_bn
from supernet.layers import Backbone, StaticSubnet, build_static_model
from supernet.space import get_space

TINY_RES = 24  # input side of the tiny trained subnet, px


@pytest.fixture(scope="session")
def tiny_trained() -> tuple[StaticSubnet, object]:
    """Tiny subnet (smallest mnist arch, width 0.25, 24 px) trained 2 epochs on digits (a few seconds), BN
    recalibrated, eval mode; and the dataset. Tests must not modify it (copy or fold it first).

    Trained because random nets amplify any perturbation (int8 per-channel error 0.46 of the logit spread vs 0.10
    after training), so a bound on a random net would either be loose enough to hide a bug or flaky.
    """
    torch.manual_seed(0)
    data = load_dataset("digits")
    space = get_space("mnist")
    model = build_static_model(
        Backbone(in_channels=1, num_classes=10, width_mult=0.25), space.smallest(resolution=TINY_RES), space=space
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(2):
        model.train()
        g = torch.Generator().manual_seed(epoch)
        for x, y in iterate_batches(data.train, batch_size=64, mean=data.mean, std=data.std, resolution=TINY_RES,
                                    generator=g):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    recalibrate_bn(model, calibration_batches(data, n_images=256, resolution=TINY_RES, seed=0))
    return model.eval(), data


@pytest.fixture(scope="session")
def tiny_val_inputs(tiny_trained: tuple[StaticSubnet, object]) -> np.ndarray:
    """48 held-out inputs (N, 1, 24, 24) from the validation split: never seen by training or calibration."""
    from supernet.quantize import split_arrays

    _, data = tiny_trained
    xs, _ = split_arrays(data, split="val", resolution=TINY_RES, max_images=48)  # type: ignore[arg-type]
    assert len(xs) == 48
    return xs
