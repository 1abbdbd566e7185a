"""TOML run files for ``hwnas train --config run.toml``: a `TrainConfig`, optionally with its own schedule.

Format (every key optional; top-level keys are `TrainConfig` fields, plus ``recipe``)::

    recipe = "progressive-shrinking"   # sets schedule and kd_loss (see supernet.train.RECIPES)
    dataset = "cifar10"
    data_root = "/data/cifar"
    space = "cifar"
    width_mult = 1.0
    epochs = 60                        # split over the phases by their epochs_frac
    batch_size = 128                   # global; each of N ranks gets batch_size / N
    kd_loss = "alpha-divergence"       # overrides the recipe's
    feature_loss = "attention"         # hint | attention; omit for none

    [kd_options]                       # keyword options of kd_loss
    alpha_min = -1.0
    alpha_max = 1.0
    clip = 5.0

    [[phases]]                         # a declared schedule replaces the named one
    name = "full"
    epochs = 20                        # absolute epochs (all phases), or epochs_frac (shares)
    lr = 0.1
    distill = false

    [[phases]]
    name = "kernel"
    epochs = 40
    lr = 0.03
    kernels = [3, 5, 7]

With ``epochs`` in the phases, the top-level ``epochs`` is their sum (giving both is allowed only if equal).
A run file without ``recipe``, ``schedule`` and ``phases`` uses `supernet.train.DEFAULT_RECIPE`.

The file is read with `tomllib` (data only, nothing is executed). Every error names the file and the key
(``phases[2].kernels``), says what was expected and what was found; unknown keys are refused with the known
ones listed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from supernet.errors import InputError
from supernet.io import missing_file_message
from supernet.train import DEFAULT_RECIPE, RECIPES, Phase, TrainConfig

__all__ = ["ConfigFileError", "load_train_config", "parse_train_config"]


class ConfigFileError(InputError):
    """A run file is unreadable or invalid; the message names the file and the key."""


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a TOML run file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigFileError(missing_file_message("run file", p))
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{p}: not valid TOML: {e}") from None
    return parse_train_config(doc, source=str(p))


def parse_train_config(doc: Mapping[str, Any], *, source: str = "run file") -> TrainConfig:
    """Build a `TrainConfig` from a parsed TOML document (see the module docstring for the keys)."""
    hints = typing.get_type_hints(TrainConfig)
    top_known = [f.name for f in fields(TrainConfig)] + ["recipe"]
    _refuse_unknown(doc, top_known, where="", source=source)

    values: dict[str, Any] = {}
    recipe = doc.get("recipe")
    if recipe is not None:
        if not isinstance(recipe, str) or recipe not in RECIPES:
            raise ConfigFileError(f"{source}: key 'recipe': expected one of {sorted(RECIPES)}, got {recipe!r}")
    elif "schedule" not in doc and "phases" not in doc:
        recipe = DEFAULT_RECIPE
    if recipe is not None:
        values.update(RECIPES[recipe])

    for key, value in doc.items():
        if key in ("recipe", "phases"):
            continue
        values[key] = _check_type(value, hints[key], key=key, source=source)

    if "phases" in doc:
        phases, total = _parse_phases(doc["phases"], source=source)
        values["phases"] = phases
        if total is not None:
            if "epochs" in doc and doc["epochs"] != total:
                raise ConfigFileError(
                    f"{source}: key 'epochs' = {doc['epochs']} but the phases' epochs add up to {total}; "
                    "drop one of them"
                )
            values["epochs"] = total
    try:
        return TrainConfig(**values)
    except (ValueError, KeyError) as e:
        raise ConfigFileError(f"{source}: {e.args[0] if e.args else e}") from None


def _parse_phases(raw: Any, *, source: str) -> tuple[tuple[Phase, ...], int | None]:
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise ConfigFileError(f"{source}: key 'phases': expected one or more [[phases]] tables")
    hints = typing.get_type_hints(Phase)
    known = [f.name for f in fields(Phase) if f.name != "epochs_frac"] + ["epochs", "epochs_frac"]
    with_epochs = ["epochs" in t for t in raw]
    with_frac = ["epochs_frac" in t for t in raw]
    phases = []
    for i, table in enumerate(raw):
        where = f"phases[{i}]"
        _refuse_unknown(table, known, where=where + ".", source=source)
        for req in ("name", "lr"):
            if req not in table:
                raise ConfigFileError(f"{source}: key '{where}.{req}' is missing")
        if with_epochs[i] == with_frac[i]:
            raise ConfigFileError(f"{source}: key '{where}': give exactly one of 'epochs' or 'epochs_frac'")
        kw: dict[str, Any] = {}
        for key, value in table.items():
            if key == "epochs":
                n = _check_type(value, int, key=f"{where}.epochs", source=source)
                if n < 1:
                    raise ConfigFileError(f"{source}: key '{where}.epochs': expected >= 1, got {n}")
                kw["epochs_frac"] = float(n)
            else:
                kw[key] = _check_type(value, hints[key], key=f"{where}.{key}", source=source)
        try:
            phases.append(Phase(**kw))
        except ValueError as e:
            raise ConfigFileError(f"{source}: key '{where}': {e}") from None
    if any(with_epochs) and not all(with_epochs):
        raise ConfigFileError(f"{source}: key 'phases': use 'epochs' in every phase or 'epochs_frac' in every phase")
    total = sum(int(t["epochs"]) for t in raw) if all(with_epochs) else None
    return tuple(phases), total


def _refuse_unknown(table: Mapping[str, Any], known: list[str], *, where: str, source: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigFileError(f"{source}: unknown key '{where}{key}'{hint}; known keys: {sorted(known)}")


def _check_type(value: Any, hint: Any, *, key: str, source: str) -> Any:
    """Return ``value`` converted to ``hint`` (int, float, str, bool, X | None, tuple[int, ...], dict[str, float])."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        # TOML has no null: a None-able key is simply left out
        return _check_type(value, args[0], key=key, source=source)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigFileError(f"{source}: key '{key}': expected a list of integers, got {value!r}")
        return tuple(_check_type(v, int, key=f"{key}[{i}]", source=source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigFileError(f"{source}: key '{key}': expected a table of numbers, got {value!r}")
        return {k: _check_type(v, float, key=f"{key}.{k}", source=source) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigFileError(f"{source}: key '{key}': expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigFileError(f"{source}: key '{key}': expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigFileError(f"{source}: key '{key}': expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigFileError(f"{source}: key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigFileError(f"{source}: key '{key}': unsupported type {hint!r}")  # pragma: no cover
