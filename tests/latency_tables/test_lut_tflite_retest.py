"""Test-retest of whole subnets must not report a machine that was uniformly slower in one session as disagreement.

Issue 5's LiteRT benchmark reported two protocol runs of the same 30 subnets agreeing within ±10 % for 0 % of them
(median |diff| 30 %), while the processes inside each run agreed to 0.3 % and the correction fitted on run 1 scored
0.4 % MAPE: one uniform factor between the two sessions, compared in absolute ms. Here the fake backend runs 30 %
slower during the second `measure_models` of `validate`; the reported retest must still agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import latency_tables.predictor as predictor_mod
from latency_tables.backends.fake import FakeBackend
from latency_tables.predictor import validate
from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import LatencyTable

RETEST = MeasurementProtocol(
    rounds=3, runs_per_round=5, warmups=0, load_warmups=0, processes=2, spawn=False, chunk_size=64
)
SESSION_LEVELS = (1.0, 1.3)  # the machine's speed factor during validate's first and second measurement


@pytest.fixture
def two_sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the fake machine run at ``SESSION_LEVELS[k]`` during validate's k-th `measure_models`; returns the
    list of calls made."""
    level = {"now": 1.0}
    calls: list[int] = []
    plain_time_runs = FakeBackend.time_runs
    real_measure = predictor_mod.measure_models

    def slowed_time_runs(self: FakeBackend, prepared: Any, runs: int) -> np.ndarray:
        return plain_time_runs(self, prepared, runs) * level["now"]

    def measure_in_session(*args: Any, **kwargs: Any) -> Any:
        level["now"] = SESSION_LEVELS[len(calls)]
        calls.append(1)
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(FakeBackend, "time_runs", slowed_time_runs)
    monkeypatch.setattr(predictor_mod, "measure_models", measure_in_session)
    return calls


def test_retest_cancels_a_uniform_session_level(fake_table: LatencyTable, two_sessions: list[int]) -> None:
    report = validate(fake_table, n_fit=6, n_test=12, protocol=RETEST, retest=True, seed=3)
    assert len(two_sessions) == 2
    tr = report.test_retest
    assert tr["two full protocol runs"]["within_10pct"] == 1.0
    assert tr["two full protocol runs"]["median_abs_diff_pct"] < 5.0
    # the absolute ms still show the session level (1.3x: 26 % relative to the pair's mean), under their own name
    own = tr["two full protocol runs, own ms"]
    assert own["within_10pct"] == 0.0 and own["median_abs_diff_pct"] == pytest.approx(26.1, abs=3.0)
    assert "own ms" in report.summary()


def test_retest_with_table_scale_is_already_probe_normalised(fake_table: LatencyTable, two_sessions: list[int]) -> None:
    report = validate(fake_table, n_fit=6, n_test=12, protocol=RETEST, retest=True, seed=3, scale="table")
    tr = report.test_retest
    assert tr["two full protocol runs"]["within_10pct"] == 1.0
    assert tr["two full protocol runs, own ms"]["within_10pct"] == 1.0
