from __future__ import annotations

import numpy as np
import optuna
import pytest

from supernet.space import ArchConfig, InvalidArchError, SearchSpace, get_space, list_spaces
from supernet.testing import ModelContract, SpaceContract


@pytest.fixture(params=list_spaces())
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def _samples(space: SearchSpace, n: int = 100, seed: int = 0) -> list[ArchConfig]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_ofa_space_size_matches_the_paper() -> None:
    space = get_space("ofa-mbv3")
    assert space.num_subnets(224) == (9**2 + 9**3 + 9**4) ** 5
    assert f"{space.num_subnets(224):.2e}" == "2.18e+19"
    assert space.n_decisions == 46
    assert space.num_subnets() == space.num_subnets(224) * 25


@pytest.mark.parametrize("space_name", list_spaces())
class TestEverySpace(SpaceContract, ModelContract):
    """`supernet.testing`: encodings, round trips, sampling; the supernet's two forwards and its static model."""


def test_canonical_forgets_inactive_slots(space: SearchSpace) -> None:
    c = space.smallest()
    noisy = ArchConfig(
        c.resolution, c.depths,
        tuple(k or max(space.kernel_choices) for k in c.kernel_sizes),
        tuple(e or max(space.expand_choices) for e in c.expand_ratios),
    )
    assert noisy != c
    assert space.canonical(noisy) == c
    assert str(noisy) == str(c)


def test_mutate_crossover_neighbors_stay_in_space(space: SearchSpace) -> None:
    rng = np.random.default_rng(1)
    a, b = _samples(space, 2)
    for _ in range(50):
        m = space.mutate(a, rng, prob=0.3)
        assert space.canonical(m) == m
        space.validate(space.crossover(a, b, rng))
    nbrs = space.neighbors(a)
    assert a not in nbrs and len(nbrs) == len(set(nbrs))
    for n in nbrs:
        diff = np.count_nonzero(space.encode(n) != space.encode(a))
        assert diff >= 1
    assert space.mutate(a, rng, prob=0.0) == a


def test_optuna_suggest_roundtrip(space: SearchSpace) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for c in _samples(space, 10):
        study.enqueue_trial(space.to_params(c))
        trial = study.ask()
        assert space.suggest(trial) == c
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ({"resolution": 999}, "resolution: 999 is not allowed"),
        ({"depths": (2, 3, 4, 4)}, "depths: expected 5 entries"),
        ({"depths": (2, 3, 4, 4, 5)}, "depths[4]: 5 is not allowed; allowed: [2, 3, 4]"),
        ({"kernel_sizes": (3,) * 19}, "kernel_sizes has 19 entries but expand_ratios has 20"),
        ({"kernel_sizes": (4,) * 20}, "kernel_sizes[0] (stage 0, block 0): 4 is not allowed; allowed: [3, 5, 7]"),
        ({"expand_ratios": (3,) * 19 + (5,)}, "expand_ratios[19]"),
    ],
)
def test_invalid_configs_name_the_field(mutation: dict, message: str) -> None:
    space = get_space("ofa-mbv3")
    base = space.largest().to_json()
    base.update({k: list(v) if isinstance(v, tuple) else v for k, v in mutation.items()})
    with pytest.raises(InvalidArchError) as e:
        space.validate(ArchConfig.from_json(base))
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"resolution": 224}, "missing 'schema_version'"),
        ({"schema_version": 99}, "schema_version 99 is not supported"),
        ({"schema_version": 1, "resolution": 224}, "missing field(s)"),
        ({"schema_version": 1, "resolution": "224", "depths": [2] * 5, "kernel_sizes": [3] * 20,
          "expand_ratios": [3] * 20}, "resolution: expected an integer"),
        ({"schema_version": 1, "resolution": 224, "depths": [2] * 5, "kernel_sizes": [3] * 20,
          "expand_ratios": [3] * 20, "width": 1}, "unknown field(s) ['width']"),
    ],
)
def test_bad_json_is_explained(payload: dict, message: str) -> None:
    with pytest.raises(InvalidArchError) as e:
        ArchConfig.from_json(payload)
    assert message in str(e.value)


def test_bad_string_is_explained() -> None:
    space = get_space("mnist")
    with pytest.raises(InvalidArchError, match="expected the form"):
        space.parse("resnet50")
    with pytest.raises(InvalidArchError, match="stage 0 has depth 2 but 1 blocks"):
        space.parse("r28-d2.2.2.2.2-k3e3_k3e3.k3e3_k3e3.k3e3_k3e3.k3e3_k3e3.k3e3")


def test_resolve_arch_accepts_every_form_and_explains_bad_input(tmp_path) -> None:
    import json as _json

    from supernet.space import resolve_arch

    space = get_space("mnist")
    cfg = space.sample(np.random.default_rng(7))
    (tmp_path / "a.json").write_text(_json.dumps({"arch": cfg.to_json()}))
    assert resolve_arch(str(tmp_path / "a.json"), space) == cfg
    assert resolve_arch(_json.dumps(cfg.to_json()), space) == cfg
    assert resolve_arch(str(cfg), space) == cfg
    assert resolve_arch("largest", space) == space.largest()
    with pytest.raises(InvalidArchError, match="does not exist"):
        resolve_arch(str(tmp_path / "missing.json"), space)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidArchError, match="is not valid JSON"):
        resolve_arch(str(tmp_path / "bad.json"), space)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InvalidArchError, match="must hold a JSON object"):
        resolve_arch(str(tmp_path / "list.json"), space)
    with pytest.raises(InvalidArchError, match="inline JSON is not valid"):
        resolve_arch("{oops", space)


def test_optuna_parameter_names_come_from_one_place() -> None:
    """`suggest`, `to_params`, `from_params` and `nas.study.param_distributions` agree on names and ranges."""
    import numpy as np
    import optuna

    from nas.study import param_distributions

    space = get_space("mnist")
    dists = param_distributions(space)
    assert list(dists) == list(space.param_ranges())
    rng = np.random.default_rng(0)
    for _ in range(20):
        cfg = space.sample(rng)
        params = space.to_params(cfg)
        assert list(params) == list(space.param_ranges())
        assert space.from_params(params) == space.canonical(cfg)
        assert space.suggest(optuna.trial.FixedTrial(params)) == space.canonical(cfg)
        assert all(dists[k].low <= v <= dists[k].high for k, v in params.items())
    assert next(iter(space.to_params(cfg, prefix="a_"))) == "a_r"


def test_ordinal_decode_snaps_to_the_nearest_choice_and_ties_to_the_smaller() -> None:
    """Continuous ordinal vectors (e.g. from a relaxation) snap per entry; a value halfway snaps down."""
    space = get_space("mnist")
    c = space.largest()
    v = space.encode(c, "ordinal")
    n = space.n_stages
    v[0] = 26.0  # halfway between 24 and 28 -> 24
    v[1] = 2.5  # depth halfway between 2 and 3 -> 2
    v[1 + n] = 6.0  # kernel halfway between 5 and 7 -> 5
    v[1 + n + space.n_slots] = 3.4  # expand nearest 3
    d = space.decode(v, "ordinal")
    assert d.resolution == 24 and d.depths[0] == 2 and d.kernel_sizes[0] == 5 and d.expand_ratios[0] == 3


def test_onehot_decode_refuses_an_active_slot_after_an_inactive_one() -> None:
    space = get_space("mnist")
    v = space.encode(space.smallest(), "onehot")  # depth 2 everywhere: slots 0, 1 active, 2, 3 inactive
    nk, ne = len(space.kernel_choices), len(space.expand_choices)
    base = 3 * (nk + ne)  # slot 3 of stage 0
    v[base] = v[base + nk] = 1.0
    with pytest.raises(InvalidArchError, match="stage 0 has an active slot 3 after an inactive one"):
        space.decode(v, "onehot")


def test_errors_never_echo_long_input() -> None:
    space = get_space("ofa-mbv3")
    huge = "r224-d4.4.4.4.4-" + "k3e6." * 100_000
    for bad in (huge, "x" * 1_000_000):
        with pytest.raises(InvalidArchError) as ei:
            space.parse(bad)
        msg = str(ei.value)
        assert len(msg) < 400 and f"({len(bad)} chars)" in msg
    with pytest.raises(InvalidArchError) as ei:
        ArchConfig.from_json({"schema_version": 1, "resolution": 224, "depths": [2] * 5, "kernel_sizes": [3] * 20,
                              "expand_ratios": [3] * 20, **{f"junk{i}": 0 for i in range(10_000)}})
    assert len(str(ei.value)) < 400 and "junk0" in str(ei.value)
    # short input is shown whole
    with pytest.raises(InvalidArchError, match="'r224-bogus'"):
        space.parse("r224-bogus")
