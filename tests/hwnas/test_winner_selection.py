"""Winner's curse: per target, the top-k candidates by search-time val are re-scored on all of val before one wins."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from hwnas.pipeline import SearchJob, _select_winner
from nas.objective import Evaluation
from supernet.space import get_space

SPACE = get_space("mnist")


def _ev(i: int, acc: float, ms: float) -> Evaluation:
    return Evaluation(arch=SPACE.sample(np.random.default_rng(i)), accuracy=acc, latency_ms=ms, reward=acc)


def _job(k: int) -> SearchJob:
    return SearchJob(supernet_path="s.pt", table_path="t.csv", targets_ms=(1.0,), search_val_images=100,
                     rescore_top_k=k)


def test_top_k_are_rescored_and_the_best_rescored_one_wins() -> None:
    lucky, solid, slow = _ev(1, 0.97, 0.8), _ev(2, 0.95, 0.9), _ev(3, 0.99, 1.5)  # slow misses the target
    other = _ev(4, 0.94, 0.7)
    per = {"gp": SimpleNamespace(best=lucky, history=[lucky, slow]),
           "evolution": SimpleNamespace(best=solid, history=[solid, other])}
    full = {str(lucky.arch): 0.93, str(solid.arch): 0.955, str(other.arch): 0.95, str(slow.arch): 0.999}
    asked: list[str] = []

    def full_val(cfgs: list) -> np.ndarray:  # type: ignore[type-arg]
        asked.extend(str(c) for c in cfgs)
        return np.array([full[str(c)] for c in cfgs])

    best, sel = _select_winner(per, ["gp", "evolution"], 1.0, job=_job(2), full_val_fn=full_val, search_images=100,
                               val_images=1500)
    assert best is solid and sel["val_top1"] == 0.955 and sel["rescored"]
    assert asked == [str(lucky.arch), str(solid.arch)]  # top 2 by search val among those meeting 1.0 ms
    assert [c["val_top1"] for c in sel["candidates"]] == [0.93, 0.955]
    # without re-scoring the first strategy's (lucky) best would have won
    best0, sel0 = _select_winner(per, ["gp", "evolution"], 1.0, job=_job(0), full_val_fn=full_val, search_images=100,
                                 val_images=1500)
    assert best0 is lucky and not sel0["rescored"]
