from __future__ import annotations

import numpy as np
import pytest

from nas._codec import SpaceCodec
from supernet.space import ArchConfig, get_space


@pytest.mark.parametrize("name", ["ofa-mbv3", "mnist"])
def test_codec_agrees_with_space(name: str) -> None:
    space = get_space(name)
    codec = SpaceCodec(space)
    rng = np.random.default_rng(1)
    canon = codec.canonicalise(codec.mutate_full(codec.balanced_full(rng, 64), rng, 0.3))
    archs = codec.to_archs(canon)
    for a in archs:
        assert space.canonical(a) == a
        b = ArchConfig.from_json(a.to_json())  # validated construction
        assert a == b and hash(a) == hash(b)
    assert (codec.from_archs(archs) == canon).all()
    assert np.array_equal(codec.ordinal_values(archs), space.encode_many(archs))
    f = codec.unit_features(canon)
    assert f.shape == (64, space.n_decisions) and f.max() <= 1.0 and f.min() >= -1.0


def test_balanced_design_uses_every_choice() -> None:
    codec = SpaceCodec(get_space("ofa-mbv3"))
    design = codec.balanced_full(np.random.default_rng(0), 30)
    for col, k in zip(design.T, codec.n_choices, strict=True):
        counts = np.bincount(col, minlength=k)
        assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("name", ["ofa-mbv3", "mnist"])
def test_codec_neighbors_equal_the_space_neighbors(name: str) -> None:
    space = get_space(name)
    codec = SpaceCodec(space)
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = space.sample(rng)
        nb = codec.neighbors(codec.from_archs([a])[0])
        assert set(codec.to_archs(nb)) == set(space.neighbors(a))
        assert len(nb) == len(space.neighbors(a))
