"""An RL controller trained with REINFORCE, as in MnasNet (Tan et al., 2019) — simplified.

Notation
--------
The policy is a product of independent categoricals, one per decision ``p`` of the space's ordinal layout, with
logits ``theta_p``. For a sampled architecture ``a`` with reward ``R(a)``:

    grad J = E[(R(a) - b) * grad log pi(a)],   d log pi / d theta_p = onehot(a_p) - softmax(theta_p)

``b`` is an exponential moving average of the reward (decay ``baseline_decay``); advantages are divided by a
running reward standard deviation so the step size does not depend on the reward's scale. Decisions of
inactive slots do not influence the network, so they get no gradient. Updates use Adam on ``theta``.
MnasNet's LSTM controller and PPO are replaced by this factorised policy: with 46 decisions and budgets of
tens to hundreds of evaluations, the extra controller parameters cannot be learnt anyway.
"""

from __future__ import annotations

import time

import numpy as np

from nas._codec import SpaceCodec
from nas.objective import Objective
from nas.strategies.base import Callback, EvalLoop, SearchResult, SearchStrategy

__all__ = ["ReinforceSearch"]


class ReinforceSearch(SearchStrategy):
    """REINFORCE over a factorised categorical policy (see module notation).

    Args:
        batch_size: architectures sampled per policy update.
        learning_rate: Adam step size on the logits.
        baseline_decay: EMA decay of the reward baseline.
        entropy_weight: bonus keeping the policy from collapsing too early.
    """

    name = "rl"

    def __init__(self, *, batch_size: int = 8, learning_rate: float = 0.15, baseline_decay: float = 0.8,
                 entropy_weight: float = 1e-3) -> None:
        if batch_size < 1 or learning_rate <= 0 or not (0 <= baseline_decay < 1):
            raise ValueError("batch_size >= 1, learning_rate > 0 and baseline_decay in [0, 1) are required")
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight

    def search(
        self, objective: Objective, *, budget: int, seed: int, callback: Callback | None = None,
        plan_budget: int | None = None,
    ) -> SearchResult:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        codec = SpaceCodec(objective.space)
        loop = EvalLoop(objective, budget=budget, callback=callback)
        n_choices = codec.n_choices
        P, C = len(n_choices), int(n_choices.max())
        valid = np.arange(C)[None, :] < n_choices[:, None]  # (P, C)
        theta = np.zeros((P, C))
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        beta1, beta2, step = 0.9, 0.999, 0
        baseline: float | None = None
        r_var = 1e-4
        stalls = 0
        while not loop.done and stalls < 50:
            logits = np.where(valid, theta, -np.inf)
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            cum = probs.cumsum(axis=1)
            u = rng.random((self.batch_size, P, 1))
            full = np.minimum((u > cum[None, :, :]).sum(axis=2), n_choices[None, :] - 1)
            canon = codec.canonicalise(full)
            archs = codec.to_archs(canon)
            new = loop.evaluate(archs)
            stalls = 0 if new else stalls + 1
            rewards = []
            for a in archs:
                ev = loop.get(a)
                rewards.append(np.nan if ev is None else ev.reward)  # None only past the budget
            r = np.asarray(rewards)
            ok = np.isfinite(r)
            if not ok.any():
                break
            rb = float(r[ok].mean())
            baseline = rb if baseline is None else self.baseline_decay * baseline + (1 - self.baseline_decay) * rb
            r_var = self.baseline_decay * r_var + (1 - self.baseline_decay) * float(((r[ok] - baseline) ** 2).mean())
            adv = np.where(ok, (np.nan_to_num(r) - baseline) / np.sqrt(r_var + 1e-12), 0.0)
            onehot = np.zeros((self.batch_size, P, C))
            np.put_along_axis(onehot, full[:, :, None], 1.0, axis=2)
            active = (canon >= 0)[:, :, None]
            grad = ((onehot - probs[None]) * active * adv[:, None, None]).mean(axis=0)
            # entropy bonus: d H / d theta = -p (log p - sum p log p)
            logp = np.log(np.where(valid, probs, 1.0))
            grad += self.entropy_weight * -probs * (logp - (probs * logp).sum(axis=1, keepdims=True))
            grad = np.where(valid, grad, 0.0)
            step += 1
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad**2
            theta += self.learning_rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + 1e-8)
        if not loop.done:
            loop.fill_random(rng)
        return self._result(loop, seed=seed, t0=t0)
