"""Accuracy predictor: an MLP from an architecture's encoding (and bit-width) to its validation accuracy.

OFA's predictor is 3 hidden layers of 400 units with ReLU on the one-hot encoding (`SearchSpace.encode(kind=
"onehot")`), trained with MSE on measured (architecture, accuracy) pairs. Targets are standardised; the network
predicts ``mean + std * f(x)``.

Bit-width aware (APQ, Wang et al. 2020, arXiv 2006.08509): with ``precisions`` the input is the architecture
encoding followed by a one-hot of the precision, ``x = [enc(a), onehot(p)]``, and the targets are measured
(subnet, precision) accuracies — e.g. int8 = the BN-recalibrated subnet quantized per-channel and run by
onnxruntime. As in APQ, the quantization-aware predictor can start from a trained fp32 predictor
(``init_from``): its weights are copied, the new precision inputs start at zero and each new precision gets an
output offset equal to its mean measured difference, so before fine-tuning it predicts the fp32 accuracy shifted by
that mean and training only has to learn how the difference varies between architectures — which is what makes a
few expensive quantized measurements enough. A predictor without ``precisions`` (every version-1 artifact) was
trained on fp32 accuracies and answers only for fp32.

Artifact format (no pickle): one ``.npz`` file written atomically, holding float32 arrays ``w0, b0, w1, b1, ...``
(weights as ``(out, in)``) and ``manifest`` — UTF-8 JSON bytes as a uint8 array with ``format``
(``"hwnas.accuracy_predictor"``), ``schema_version``, the search space, encoding, precisions (schema 2; null =
fp32 only), hidden sizes, target standardisation, training settings and held-out metrics (overall and per
precision). `AccuracyPredictor.load` reads schema 1 and 2, refuses other formats, unknown schema versions and (if a
space is given) a different space, with a message saying which.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from supernet.io import atomic_open
from supernet.space import ArchConfig, EncodingKind, SearchSpace

__all__ = [
    "PRECISION_ORDER",
    "PREDICTOR_FORMAT",
    "PREDICTOR_SCHEMA_VERSION",
    "AccuracyPredictor",
    "PredictorMetrics",
    "fit_bitwidth_predictor",
    "fit_predictor",
]

log = logging.getLogger(__name__)

PREDICTOR_FORMAT = "hwnas.accuracy_predictor"
PREDICTOR_SCHEMA_VERSION = 2  # 1: fp32 only; 2: optional precision one-hot input and per-precision metrics
_READABLE_VERSIONS = (1, 2)
PRECISION_ORDER: tuple[str, ...] = ("fp32", "fp16", "int8")  # one-hot column order of the known precisions
DEFAULT_PRECISION = "fp32"


def _ordered_precisions(names: Sequence[str]) -> tuple[str, ...]:
    """Distinct names, known precisions first in `PRECISION_ORDER`, then others alphabetically."""
    uniq = set(names)
    return tuple(p for p in PRECISION_ORDER if p in uniq) + tuple(sorted(uniq - set(PRECISION_ORDER)))


@dataclass(frozen=True)
class PredictorMetrics:
    """Held-out quality: RMSE in accuracy units ([0, 1]) and Kendall's tau of the ranking."""

    rmse: float
    kendall_tau: float
    n_train: int
    n_test: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _encode_inputs(space: SearchSpace, encoding: EncodingKind, choices: tuple[str, ...] | None,
                   cfgs: Sequence[ArchConfig], precisions: Sequence[str]) -> np.ndarray:
    """``[enc(a), onehot(p)]`` rows (just ``enc(a)`` when ``choices`` is None); precisions already checked."""
    x = space.encode_many(list(cfgs), encoding)
    if choices is None:
        return x
    onehot = np.zeros((len(cfgs), len(choices)))
    onehot[np.arange(len(cfgs)), [choices.index(p) for p in precisions]] = 1.0
    return np.concatenate([x, onehot], axis=1)


class AccuracyPredictor:
    """A trained MLP accuracy predictor; call it on a batch of architectures (an `nas.objective.ArchFn`, at fp32)
    or use ``predictor.at("int8")`` for the batched function at another precision.

    Build one with `fit_predictor` or `AccuracyPredictor.load`; the constructor takes already-trained weights.
    ``precisions``: the one-hot precision inputs (bit-width aware); None: no precision input, fp32 only.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        y_mean: float,
        y_std: float,
        encoding: EncodingKind = "onehot",
        metrics: PredictorMetrics | None = None,
        training: dict[str, Any] | None = None,
        precisions: Sequence[str] | None = None,
        metrics_by_precision: Mapping[str, PredictorMetrics] | None = None,
        y_offsets: Mapping[str, float] | None = None,
    ) -> None:
        if len(weights) != len(biases) or not weights:
            raise ValueError("AccuracyPredictor: need matching, non-empty lists of weights and biases")
        if precisions is not None:
            precisions = tuple(precisions)
            if not precisions or len(set(precisions)) != len(precisions) or not all(precisions):
                raise ValueError(f"AccuracyPredictor: precisions must be distinct non-empty names, got {precisions}")
        n_in = space.encoding_size(encoding) + (0 if precisions is None else len(precisions))
        if weights[0].shape[1] != n_in:
            extra = "" if precisions is None else f" plus {len(precisions)} precision inputs {list(precisions)}"
            raise ValueError(f"AccuracyPredictor: first layer takes {weights[0].shape[1]} inputs but the "
                             f"{encoding} encoding of {space.name!r} has {space.encoding_size(encoding)}{extra}")
        self.space = space
        self.precisions: tuple[str, ...] | None = precisions
        self.metrics_by_precision: dict[str, PredictorMetrics] = dict(metrics_by_precision or {})
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.y_mean, self.y_std = float(y_mean), float(y_std)
        self.y_offsets = {str(k): float(v) for k, v in (y_offsets or {}).items()}
        unknown = sorted(set(self.y_offsets) - set(precisions or ()))
        if unknown:
            raise ValueError(f"AccuracyPredictor: y_offsets for precisions {unknown} it has no input for")
        self.encoding: EncodingKind = encoding
        self.metrics = metrics
        self.training = dict(training or {})

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.weights[:-1])

    @property
    def precision_aware(self) -> bool:
        """True when the precision is an input (schema 2 with ``precisions``)."""
        return self.precisions is not None

    @property
    def supported_precisions(self) -> tuple[str, ...]:
        """The precisions this predictor answers for (``("fp32",)`` for a precision-blind one)."""
        return self.precisions if self.precisions is not None else (DEFAULT_PRECISION,)

    def _precision_list(self, precision: str | Sequence[str] | None, n: int) -> list[str]:
        ps = [DEFAULT_PRECISION] * n if precision is None else (
            [precision] * n if isinstance(precision, str) else list(precision))
        if len(ps) != n:
            raise ValueError(f"AccuracyPredictor: {len(ps)} precisions for {n} architectures")
        bad = sorted(set(ps) - set(self.supported_precisions))
        if bad:
            how = ("it was trained on fp32 accuracies only (no precision input); train a bit-width-aware predictor "
                   "with fit_predictor(..., precisions=...)") if self.precisions is None else (
                "it has no measurements at that precision; retrain it with (subnet, precision) pairs that include it")
            raise ValueError(f"AccuracyPredictor: cannot predict at precision(s) {bad}: {how}; it answers for "
                             f"{list(self.supported_precisions)}")
        return ps

    def inputs(self, cfgs: Sequence[ArchConfig], precision: str | Sequence[str] | None = None) -> np.ndarray:
        """The network's input rows: the architecture encoding, then (if precision aware) the precision one-hot."""
        ps = self._precision_list(precision, len(cfgs))
        return _encode_inputs(self.space, self.encoding, self.precisions, cfgs, ps)

    def predict(self, cfgs: Sequence[ArchConfig], *, precision: str | Sequence[str] | None = None) -> np.ndarray:
        """Predicted accuracy in [0, 1] for each architecture at ``precision`` (one name for all, or one per
        architecture; default fp32). Numpy forward pass; no torch needed. A precision the predictor was not
        trained for raises ``ValueError``."""
        if not cfgs:
            return np.zeros(0)
        ps = self._precision_list(precision, len(cfgs))
        h = _encode_inputs(self.space, self.encoding, self.precisions, cfgs, ps).astype(np.float32)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        offset = np.asarray([self.y_offsets.get(p, 0.0) for p in ps])
        return np.clip(self.y_mean + offset + self.y_std * h[:, 0].astype(np.float64), 0.0, 1.0)

    def __call__(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        return self.predict(cfgs)

    def at(self, precision: str) -> Any:
        """The batched accuracy function ``cfgs -> accuracies`` at one precision (an `nas.objective.ArchFn`), e.g.
        the accuracy prior of a search that targets int8. Checks the precision now, not at the first call."""
        self._precision_list(precision, 1)
        return functools.partial(self.predict, precision=precision)

    def evaluate(self, cfgs: Sequence[ArchConfig], accuracies: Sequence[float] | np.ndarray, *, n_train: int = 0,
                 precision: str | Sequence[str] | None = None) -> PredictorMetrics:
        from scipy.stats import kendalltau

        y = np.asarray(accuracies, dtype=np.float64)
        p = self.predict(cfgs, precision=precision)
        tau = float(kendalltau(p, y).statistic) if len(y) > 1 else math.nan
        return PredictorMetrics(rmse=float(np.sqrt(np.mean((p - y) ** 2))), kendall_tau=tau, n_train=n_train,
                                n_test=len(y))

    # ----------------------------------------------------------------- artifact
    def manifest(self) -> dict[str, Any]:
        return {
            "format": PREDICTOR_FORMAT,
            "schema_version": PREDICTOR_SCHEMA_VERSION,
            "space": self.space.to_json(),
            "encoding": self.encoding,
            "precisions": None if self.precisions is None else list(self.precisions),
            "hidden": list(self.hidden),
            "activation": "relu",
            "y_mean": self.y_mean,
            "y_std": self.y_std,
            "y_offset_by_precision": self.y_offsets,
            "metrics": None if self.metrics is None else self.metrics.to_json(),
            "metrics_by_precision": {k: v.to_json() for k, v in self.metrics_by_precision.items()},
            "training": self.training,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ``.npz`` artifact atomically (see module docstring)."""
        arrays: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        arrays["manifest"] = np.frombuffer(json.dumps(self.manifest()).encode("utf-8"), dtype=np.uint8)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, space: SearchSpace | None = None) -> AccuracyPredictor:
        """Read an artifact written by `save` (schema 1: fp32 only; 2: optionally precision aware); refuse other
        formats / schema versions / a different space."""
        where = f"accuracy predictor {os.fspath(path)!r}"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"{where} does not exist") from None
        except (ValueError, OSError) as e:
            raise ValueError(f"{where} is not a readable .npz artifact: {e}") from None
        if "manifest" not in arrays:
            raise ValueError(f"{where} has no 'manifest' entry; it was not written by AccuracyPredictor.save")
        try:
            m = json.loads(arrays["manifest"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where}: manifest is not valid JSON ({e})") from None
        if m.get("format") != PREDICTOR_FORMAT:
            raise ValueError(f"{where}: format {m.get('format')!r} is not {PREDICTOR_FORMAT!r}")
        if m.get("schema_version") not in _READABLE_VERSIONS:
            raise ValueError(f"{where}: schema_version {m.get('schema_version')!r} is not supported (this hwnas "
                             f"reads versions {list(_READABLE_VERSIONS)}); retrain or convert the predictor")
        stored_space = SearchSpace.from_json(m["space"])
        if space is not None and space != stored_space:
            raise ValueError(f"{where} was trained for space {stored_space.describe()!r}, not {space.describe()!r}")
        n_layers = len(m["hidden"]) + 1
        missing = [k for i in range(n_layers) for k in (f"w{i}", f"b{i}") if k not in arrays]
        if missing:
            raise ValueError(f"{where}: missing arrays {missing}")
        metrics = PredictorMetrics(**m["metrics"]) if m.get("metrics") else None
        by_precision = {k: PredictorMetrics(**v) for k, v in (m.get("metrics_by_precision") or {}).items()}
        precisions = m.get("precisions") if m["schema_version"] >= 2 else None  # schema 1: fp32 only
        return cls(space=stored_space, weights=[arrays[f"w{i}"] for i in range(n_layers)],
                   biases=[arrays[f"b{i}"] for i in range(n_layers)], y_mean=m["y_mean"], y_std=m["y_std"],
                   encoding=m["encoding"], metrics=metrics, training=m.get("training", {}),
                   precisions=precisions, metrics_by_precision=by_precision,
                   y_offsets=m.get("y_offset_by_precision") or {})


def fit_predictor(
    space: SearchSpace,
    archs: Sequence[ArchConfig],
    accuracies: Sequence[float],
    *,
    precisions: Sequence[str] | None = None,
    precision_choices: Sequence[str] | None = None,
    init_from: AccuracyPredictor | None = None,
    hidden: Sequence[int] = (400, 400, 400),
    encoding: EncodingKind = "onehot",
    test_fraction: float = 0.2,
    epochs: int = 200,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    num_threads: int | None = 1,
) -> AccuracyPredictor:
    """Train an MLP on ``(arch, accuracy)`` pairs; hold out ``test_fraction`` for RMSE / Kendall tau.

    Bit-width aware (APQ): ``precisions`` gives the precision of each pair (``archs[i]`` measured at
    ``precisions[i]``; an architecture may appear once per precision). The predictor then takes a one-hot of the
    precision as input, over ``precision_choices`` (default: the precisions present, fp32 first). The held-out
    split is by architecture — all precisions of an architecture are on the same side — and held-out metrics are
    reported overall and per precision (``metrics_by_precision``). Without ``precisions`` every pair is fp32 and the
    predictor has no precision input (as before schema 2).

    Each precision p also gets an output offset ``y_offsets[p]`` (its mean accuracy difference), so the network
    models ``y = y_mean + y_offsets[p] + y_std * f([enc(a), onehot(p)])`` and only has to learn how the precision's
    effect varies between architectures.

    ``init_from`` (transfer, as APQ does from its fp32 predictor): start from that predictor's weights — same space
    and encoding, its hidden sizes (``hidden`` is ignored) and its target standardisation — with zero weights for
    precision inputs it did not have and, for those, an offset equal to the mean difference between the measured
    accuracies and its predictions. Before any training the new predictor therefore predicts the old one's fp32
    accuracy shifted by that mean; training on these pairs (typically all fp32 pairs plus the fewer quantized ones)
    then learns the architecture-dependent part.

    Randomness (split, init, shuffling) comes from ``seed`` only: torch's global generator is forked and
    restored around training, so callers' random streams are untouched. ``num_threads`` caps torch's intra-op
    threads during training (restored afterwards): a 400-wide MLP gains nothing from threads, and on shared cores
    they spin against each other (docs/measurements.md).
    """
    import torch

    y = np.asarray(accuracies, dtype=np.float64)
    if len(archs) != len(y) or len(y) < 4:
        raise ValueError(f"fit_predictor: need >= 4 (arch, accuracy) pairs of equal length, got {len(archs)} "
                         f"architectures and {len(y)} accuracies")
    choices: tuple[str, ...] | None = None
    if precisions is not None:
        precisions = list(precisions)
        if len(precisions) != len(y):
            raise ValueError(f"fit_predictor: {len(precisions)} precisions for {len(y)} (arch, accuracy) pairs")
        choices = tuple(precision_choices) if precision_choices is not None else _ordered_precisions(precisions)
        unknown = sorted(set(precisions) - set(choices))
        if unknown:
            raise ValueError(f"fit_predictor: precisions {unknown} are not among precision_choices {list(choices)}")
    elif precision_choices is not None:
        raise ValueError("fit_predictor: precision_choices needs precisions (one per pair)")
    if init_from is not None:
        if init_from.space != space or init_from.encoding != encoding:
            raise ValueError(f"fit_predictor: init_from was trained for space {init_from.space.name!r} with the "
                             f"{init_from.encoding} encoding, not {space.name!r} / {encoding}")
        hidden = init_from.hidden

    X = _encode_inputs(space, encoding, choices, archs, precisions or ()).astype(np.float32)
    rng = np.random.default_rng(seed)
    if choices is None:
        perm = rng.permutation(len(y))
        n_test = round(test_fraction * len(y)) if test_fraction > 0 else 0
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    else:  # split by architecture: a held-out architecture is unseen at every precision
        keys = [str(space.canonical(a)) for a in archs]
        groups = sorted(set(keys))
        order = rng.permutation(len(groups))
        n_test_groups = round(test_fraction * len(groups)) if test_fraction > 0 else 0
        held = {groups[i] for i in order[:n_test_groups]}
        test_idx = np.asarray([i for i, k in enumerate(keys) if k in held], dtype=np.int64)
        train_idx = np.asarray([i for i, k in enumerate(keys) if k not in held], dtype=np.int64)
    if len(train_idx) < 2:
        raise ValueError(f"fit_predictor: only {len(train_idx)} training pairs after holding out {len(test_idx)}")
    offsets: dict[str, float] = {}
    if init_from is not None:
        y_mean, y_std = init_from.y_mean, init_from.y_std
        init = _transfer_weights(init_from, choices)
        for p in choices or ():  # a new precision starts as the fp32 prediction shifted by its mean difference
            if p in init_from.y_offsets or p in init_from.supported_precisions:
                offsets[p] = init_from.y_offsets.get(p, 0.0)
            else:
                idx = [i for i in train_idx if precisions[i] == p]  # type: ignore[index]
                base = init_from.predict([archs[i] for i in idx]) if idx else np.zeros(0)
                offsets[p] = float(np.mean(y[idx] - base)) if idx else 0.0
    else:
        y_mean, y_std = float(y[train_idx].mean()), float(y[train_idx].std() or 1.0)
        init = None
        for p in choices or ():
            idx = [i for i in train_idx if precisions[i] == p]  # type: ignore[index]
            offsets[p] = float(np.mean(y[idx]) - y_mean) if idx else 0.0
    target = y - y_mean
    if choices is not None:
        target = target - np.asarray([offsets[p] for p in precisions])  # type: ignore[union-attr]
    sizes = [X.shape[1], *hidden, 1]
    prev_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        net = _train(torch, X[train_idx], (target[train_idx] / y_std).astype(np.float32), sizes=sizes,
                     epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
                     seed=seed, init=init)
    finally:
        torch.set_num_threads(prev_threads)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    training: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                                "weight_decay": weight_decay, "seed": seed, "test_fraction": test_fraction}
    if choices is not None:
        training["split"] = "by architecture"
        training["pairs_per_precision"] = {p: int(sum(1 for q in precisions or () if q == p)) for p in choices}
    if init_from is not None:
        training["init_from"] = {"precisions": list(init_from.supported_precisions), "hidden": list(init_from.hidden),
                                 "metrics": None if init_from.metrics is None else init_from.metrics.to_json()}
    pred = AccuracyPredictor(space=space, weights=[m.weight.detach().numpy().copy() for m in linears],
                             biases=[m.bias.detach().numpy().copy() for m in linears], y_mean=y_mean, y_std=y_std,
                             encoding=encoding, training=training, precisions=choices, y_offsets=offsets)
    if len(test_idx) >= 2:
        test_archs = [archs[i] for i in test_idx]
        test_prec = None if precisions is None else [precisions[i] for i in test_idx]
        pred.metrics = pred.evaluate(test_archs, y[test_idx], n_train=len(train_idx), precision=test_prec)
        log.info("accuracy predictor: held-out RMSE %.4f, Kendall tau %.3f (%d train / %d test)",
                 pred.metrics.rmse, pred.metrics.kendall_tau, len(train_idx), len(test_idx))
        if precisions is not None and choices is not None:
            for p in choices:
                idx = [i for i in test_idx if precisions[i] == p]
                n_tr = int(sum(1 for i in train_idx if precisions[i] == p))
                if len(idx) >= 2:
                    m = pred.evaluate([archs[i] for i in idx], y[idx], n_train=n_tr, precision=p)
                    pred.metrics_by_precision[p] = m
                    log.info("  at %s: held-out RMSE %.4f, Kendall tau %.3f (%d train / %d test)", p, m.rmse,
                             m.kendall_tau, n_tr, len(idx))
    return pred


def fit_bitwidth_predictor(
    space: SearchSpace,
    records: Sequence[tuple[ArchConfig, str, float]],
    *,
    hidden: Sequence[int] = (400, 400, 400),
    encoding: EncodingKind = "onehot",
    test_fraction: float = 0.2,
    epochs: int = 200,
    fine_tune_epochs: int | None = None,
    fine_tune_learning_rate: float = 3e-4,
    seed: int = 0,
    num_threads: int | None = 1,
) -> AccuracyPredictor:
    """The APQ recipe on measured ``(arch, precision, accuracy)`` records (e.g. `nas.cache.AccuracyCache.records`).

    1. Hold out ``test_fraction`` of the *architectures* (all their precisions), seeded by ``seed``.
    2. Train an fp32 predictor on the fp32 records of the other architectures (cheap to measure, so usually many).
    3. Initialise the bit-width-aware predictor from it (`fit_predictor` with ``init_from``) and fine-tune it on all
       training records for ``fine_tune_epochs`` (default ``epochs``) at ``fine_tune_learning_rate``.
    4. Score it on the held-out records: ``metrics`` (all) and ``metrics_by_precision``; the fp32-only predictor's
       held-out fp32 score is kept in ``training["fp32_base"]`` for comparison.
    """
    if not records:
        raise ValueError("fit_bitwidth_predictor: no records")
    keys = [str(space.canonical(a)) for a, _, _ in records]
    groups = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(groups))
    n_test = round(test_fraction * len(groups)) if test_fraction > 0 else 0
    held = {groups[i] for i in order[:n_test]}
    train = [r for r, k in zip(records, keys, strict=True) if k not in held]
    test = [r for r, k in zip(records, keys, strict=True) if k in held]
    fp32_train = [(a, y) for a, p, y in train if p == DEFAULT_PRECISION]
    if len(fp32_train) < 4:
        raise ValueError(f"fit_bitwidth_predictor: need >= 4 fp32 training records for the base predictor, got "
                         f"{len(fp32_train)}")
    base = fit_predictor(space, [a for a, _ in fp32_train], [y for _, y in fp32_train], hidden=hidden,
                         encoding=encoding, test_fraction=0, epochs=epochs, seed=seed, num_threads=num_threads)
    pred = fit_predictor(space, [a for a, _, _ in train], [y for _, _, y in train],
                         precisions=[p for _, p, _ in train], precision_choices=_ordered_precisions([p for _, p, _ in records]),
                         init_from=base, encoding=encoding, test_fraction=0,
                         epochs=epochs if fine_tune_epochs is None else fine_tune_epochs,
                         learning_rate=fine_tune_learning_rate, seed=seed, num_threads=num_threads)
    pred.training.update({"recipe": "APQ: fp32 predictor, then bit-width-aware fine-tuning", "split": "by architecture",
                          "test_fraction": test_fraction, "held_out_architectures": len(held),
                          "records_per_precision": {p: sum(1 for _, q, _ in records if q == p)
                                                    for p in pred.supported_precisions}})
    if len(test) >= 2:
        pred.metrics = pred.evaluate([a for a, _, _ in test], [y for _, _, y in test], n_train=len(train),
                                     precision=[p for _, p, _ in test])
        base_test = [(a, y) for a, p, y in test if p == DEFAULT_PRECISION]
        if len(base_test) >= 2:
            pred.training["fp32_base"] = base.evaluate([a for a, _ in base_test], [y for _, y in base_test],
                                                       n_train=len(fp32_train)).to_json()
        for p in pred.supported_precisions:
            rows = [(a, y) for a, q, y in test if q == p]
            if len(rows) >= 2:
                pred.metrics_by_precision[p] = pred.evaluate(
                    [a for a, _ in rows], [y for _, y in rows], precision=p,
                    n_train=sum(1 for _, q, _ in train if q == p))
    return pred


def _transfer_weights(src: AccuracyPredictor, choices: tuple[str, ...] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``src``'s layers with the first layer's precision columns laid out for ``choices``: a column ``src`` had is
    copied, a new one starts at zero (so the new network first predicts what ``src`` predicted at fp32)."""
    if choices is None and src.precisions is not None:
        raise ValueError("fit_predictor: a bit-width-aware init_from needs precisions (one per pair)")
    n_enc = src.space.encoding_size(src.encoding)
    w0 = src.weights[0]
    cols = [w0[:, :n_enc]]
    for p in choices or ():
        if src.precisions is not None and p in src.precisions:
            j = n_enc + src.precisions.index(p)
            cols.append(w0[:, j : j + 1])
        else:
            cols.append(np.zeros((w0.shape[0], 1), dtype=w0.dtype))
    first = np.concatenate(cols, axis=1)
    return [(first, src.biases[0])] + list(zip(src.weights[1:], src.biases[1:], strict=True))


def _train(torch: Any, X: np.ndarray, y: np.ndarray, *, sizes: Sequence[int], epochs: int, batch_size: int,
           learning_rate: float, weight_decay: float, seed: int,
           init: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> Any:
    """MSE training of a ReLU MLP with AdamW and a cosine schedule, on a forked (scoped) torch RNG; ``init``
    (weight, bias) per layer replaces the random initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        net = torch.nn.Sequential(*layers)
        if init is not None:
            linears = [m for m in net if isinstance(m, torch.nn.Linear)]
            with torch.no_grad():
                for lin, (w, b) in zip(linears, init, strict=True):
                    lin.weight.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
                    lin.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
        opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
        xt = torch.from_numpy(X)
        yt = torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = order[i : i + batch_size]
                loss = torch.nn.functional.mse_loss(net(xt[idx]).squeeze(1), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    return net
