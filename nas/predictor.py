"""Accuracy predictor: an MLP from an architecture's encoding to its validation accuracy (as in OFA).

OFA's predictor is 3 hidden layers of 400 units with ReLU on the one-hot encoding (`SearchSpace.encode(kind=
"onehot")`), trained with MSE on measured (architecture, accuracy) pairs. Targets are standardised; the network
predicts ``mean + std * f(x)``.

Artifact format (no pickle): one ``.npz`` file written atomically, holding float32 arrays ``w0, b0, w1, b1, ...``
(weights as ``(out, in)``) and ``manifest`` — UTF-8 JSON bytes as a uint8 array with ``format``
(``"hwnas.accuracy_predictor"``), ``schema_version``, the search space, encoding, hidden sizes, target
standardisation, training settings and held-out metrics. `AccuracyPredictor.load` refuses other formats,
unknown schema versions and (if a space is given) a different space, with a message saying which.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from supernet.io import atomic_open
from supernet.space import ArchConfig, EncodingKind, SearchSpace

__all__ = ["PREDICTOR_FORMAT", "PREDICTOR_SCHEMA_VERSION", "AccuracyPredictor", "PredictorMetrics",
           "fit_predictor"]

log = logging.getLogger(__name__)

PREDICTOR_FORMAT = "hwnas.accuracy_predictor"
PREDICTOR_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PredictorMetrics:
    """Held-out quality: RMSE in accuracy units ([0, 1]) and Kendall's tau of the ranking."""

    rmse: float
    kendall_tau: float
    n_train: int
    n_test: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class AccuracyPredictor:
    """A trained MLP accuracy predictor; call it on a batch of architectures (an `nas.objective.ArchFn`).

    Build one with `fit_predictor` or `AccuracyPredictor.load`; the constructor takes already-trained weights.
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
    ) -> None:
        if len(weights) != len(biases) or not weights:
            raise ValueError("AccuracyPredictor: need matching, non-empty lists of weights and biases")
        if weights[0].shape[1] != space.encoding_size(encoding):
            raise ValueError(f"AccuracyPredictor: first layer takes {weights[0].shape[1]} inputs but the "
                             f"{encoding} encoding of {space.name!r} has {space.encoding_size(encoding)}")
        self.space = space
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.y_mean, self.y_std = float(y_mean), float(y_std)
        self.encoding: EncodingKind = encoding
        self.metrics = metrics
        self.training = dict(training or {})

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.weights[:-1])

    def predict(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        """Predicted accuracy in [0, 1] for each architecture (numpy forward pass; no torch needed)."""
        if not cfgs:
            return np.zeros(0)
        h = self.space.encode_many(list(cfgs), self.encoding).astype(np.float32)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return np.clip(self.y_mean + self.y_std * h[:, 0].astype(np.float64), 0.0, 1.0)

    __call__ = predict

    def evaluate(self, cfgs: Sequence[ArchConfig], accuracies: Sequence[float], *, n_train: int = 0) -> PredictorMetrics:
        from scipy.stats import kendalltau

        y = np.asarray(accuracies, dtype=np.float64)
        p = self.predict(cfgs)
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
            "hidden": list(self.hidden),
            "activation": "relu",
            "y_mean": self.y_mean,
            "y_std": self.y_std,
            "metrics": None if self.metrics is None else self.metrics.to_json(),
            "training": self.training,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ``.npz`` artifact atomically (see module docstring)."""
        arrays: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        arrays["manifest"] = np.frombuffer(json.dumps(self.manifest()).encode("utf-8"), dtype=np.uint8)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, space: SearchSpace | None = None) -> AccuracyPredictor:
        """Read an artifact written by `save`; refuse other formats / schema versions / a different space."""
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
        if m.get("schema_version") != PREDICTOR_SCHEMA_VERSION:
            raise ValueError(f"{where}: schema_version {m.get('schema_version')!r} is not supported (this hwnas "
                             f"reads version {PREDICTOR_SCHEMA_VERSION}); retrain or convert the predictor")
        stored_space = SearchSpace.from_json(m["space"])
        if space is not None and space != stored_space:
            raise ValueError(f"{where} was trained for space {stored_space.describe()!r}, not {space.describe()!r}")
        n_layers = len(m["hidden"]) + 1
        missing = [k for i in range(n_layers) for k in (f"w{i}", f"b{i}") if k not in arrays]
        if missing:
            raise ValueError(f"{where}: missing arrays {missing}")
        metrics = PredictorMetrics(**m["metrics"]) if m.get("metrics") else None
        return cls(space=stored_space, weights=[arrays[f"w{i}"] for i in range(n_layers)],
                   biases=[arrays[f"b{i}"] for i in range(n_layers)], y_mean=m["y_mean"], y_std=m["y_std"],
                   encoding=m["encoding"], metrics=metrics, training=m.get("training", {}))


def fit_predictor(
    space: SearchSpace,
    archs: Sequence[ArchConfig],
    accuracies: Sequence[float],
    *,
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

    Randomness (split, init, shuffling) comes from ``seed`` only: torch's global generator is forked and
    restored around training, so callers' random streams are untouched. ``num_threads`` caps torch's intra-op
    threads during training (restored afterwards): a 400-wide MLP gains nothing from threads, and on shared cores
    they spin against each other (measured 25x slower with 2 threads under load).
    """
    import torch

    y = np.asarray(accuracies, dtype=np.float64)
    if len(archs) != len(y) or len(y) < 4:
        raise ValueError(f"fit_predictor: need >= 4 (arch, accuracy) pairs of equal length, got {len(archs)} "
                         f"architectures and {len(y)} accuracies")
    X = space.encode_many(list(archs), encoding).astype(np.float32)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y))) if test_fraction > 0 else 0
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    y_mean, y_std = float(y[train_idx].mean()), float(y[train_idx].std() or 1.0)
    sizes = [X.shape[1], *hidden, 1]
    prev_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        net = _train(torch, X[train_idx], ((y[train_idx] - y_mean) / y_std).astype(np.float32), sizes=sizes,
                     epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
                     seed=seed)
    finally:
        torch.set_num_threads(prev_threads)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    training = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "weight_decay": weight_decay, "seed": seed, "test_fraction": test_fraction}
    pred = AccuracyPredictor(space=space, weights=[m.weight.detach().numpy().copy() for m in linears],
                             biases=[m.bias.detach().numpy().copy() for m in linears], y_mean=y_mean, y_std=y_std,
                             encoding=encoding, training=training)
    if n_test >= 2:
        pred.metrics = pred.evaluate([archs[i] for i in test_idx], y[test_idx], n_train=len(train_idx))
        log.info("accuracy predictor: held-out RMSE %.4f, Kendall tau %.3f (%d train / %d test)",
                 pred.metrics.rmse, pred.metrics.kendall_tau, len(train_idx), n_test)
    return pred


def _train(torch: Any, X: np.ndarray, y: np.ndarray, *, sizes: Sequence[int], epochs: int, batch_size: int,
           learning_rate: float, weight_decay: float, seed: int) -> Any:
    """MSE training of a ReLU MLP with AdamW and a cosine schedule, on a forked (scoped) torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        net = torch.nn.Sequential(*layers)
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
