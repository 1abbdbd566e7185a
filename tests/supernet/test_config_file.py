"""TOML run files: a declared schedule round-trips into TrainConfig; every error names the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from supernet.config_file import ConfigFileError, load_train_config, parse_train_config
from supernet.space import get_space
from supernet.train import DEFAULT_RECIPE, RECIPES, Phase, TrainConfig

RUN_TOML = """
dataset = "digits"
width_mult = 0.25
batch_size = 16
kd_loss = "alpha-divergence"
feature_loss = "hint"
feature_stage = 3

[kd_options]
alpha_min = -0.5
clip = 3

[[phases]]
name = "full"
epochs = 2
lr = 0.1
distill = false

[[phases]]
name = "kernel"
epochs = 1
lr = 0.03
kernels = [3, 5, 7]

[[phases]]
name = "sandwich"
epochs = 3
lr = 0.02
kernels = [3, 5, 7]
depths = [2, 3, 4]
expands = [3, 4, 6]
subnets_per_step = 4
sandwich = true
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_run_file_with_declared_schedule(tmp_path: Path) -> None:
    cfg = load_train_config(_write(tmp_path, RUN_TOML))
    assert cfg.dataset == "digits" and cfg.width_mult == 0.25 and cfg.epochs == 6
    assert cfg.kd_options == {"alpha_min": -0.5, "clip": 3.0}
    assert cfg.phases is not None and [p.name for p in cfg.phases] == ["full", "kernel", "sandwich"]
    assert cfg.phases[2] == Phase(name="sandwich", epochs_frac=3.0, lr=0.02, kernels=(3, 5, 7), depths=(2, 3, 4),
                                  expands=(3, 4, 6), subnets_per_step=4, sandwich=True)
    from supernet.train import phase_epochs

    assert phase_epochs(cfg.resolved_phases(get_space("mnist")), cfg.epochs) == [2, 1, 3]
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_recipe_key_and_default_recipe() -> None:
    cfg = parse_train_config({"recipe": "bignas", "epochs": 3})
    assert (cfg.schedule, cfg.kd_loss, cfg.epochs) == ("bignas", "alpha-divergence", 3)
    assert parse_train_config({"recipe": "bignas", "kd_loss": "kl"}).kd_loss == "kl"  # explicit key wins
    default = parse_train_config({})
    assert default.schedule == RECIPES[DEFAULT_RECIPE]["schedule"]
    assert parse_train_config({"schedule": "demo"}).schedule == "demo"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"epoch": 3}, "unknown key 'epoch' \\(did you mean 'epochs'\\?\\)"),
        ({"epochs": "3"}, "key 'epochs': expected an integer, got '3'"),
        ({"width_mult": True}, "key 'width_mult': expected a number"),
        ({"recipe": "ofa"}, "key 'recipe': expected one of"),
        ({"kd_options": {"alpha_min": "low"}}, "key 'kd_options.alpha_min': expected a number"),
        ({"kd_loss": "kl", "kd_options": {"clip": 1.0}}, "not options of kd_loss 'kl'"),
        ({"phases": [{"name": "a", "lr": 0.1, "epochs": 1, "kernels": [3, "5"]}]}, "key 'phases\\[0\\].kernels\\[1\\]'"),
        ({"phases": [{"name": "a", "lr": 0.1, "epochs": 1, "kernel": [3]}]}, "unknown key 'phases\\[0\\].kernel'"),
        ({"phases": [{"name": "a", "epochs": 1}]}, "key 'phases\\[0\\].lr' is missing"),
        ({"phases": [{"name": "a", "lr": 0.1}]}, "phases\\[0\\]': give exactly one of 'epochs' or 'epochs_frac'"),
        ({"phases": [{"name": "a", "lr": 0.1, "epochs": 1, "distill": False}], "epochs": 5},
         "key 'epochs' = 5 but the phases' epochs add up to 1"),
        ({"phases": [{"name": "a", "lr": 0.1, "epochs": 1, "sandwich": True}]}, "phases\\[0\\]'.*sandwich"),
        ({"phases": "full"}, "key 'phases': expected one or more \\[\\[phases\\]\\] tables"),
    ],
)
def test_errors_name_the_key(doc: dict, message: str) -> None:
    with pytest.raises(ConfigFileError, match=message):
        parse_train_config(doc, source="run.toml")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_train_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_train_config(_write(tmp_path, "epochs = = 3"))


def test_cli_train_reports_config_errors(tmp_path: Path) -> None:
    from hwnas.cli import app

    p = _write(tmp_path, "epochs = 'six'\n")
    res = CliRunner().invoke(app, ["train", "--config", str(p), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "key 'epochs': expected an integer" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["train", "--recipe", "nope", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "unknown recipe" in res.output
