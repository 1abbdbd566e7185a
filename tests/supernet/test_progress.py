"""Progress events from library code: plain values to a callback; True logs them; rendering is the CLI's."""

from __future__ import annotations

import logging

import pytest

from supernet.progress import ProgressEvent, Tasks, as_callback


def test_a_task_reports_its_start_every_advance_and_info_changes() -> None:
    seen: list[ProgressEvent] = []
    with Tasks(seen.append) as tasks:
        t = tasks.task("measure", total=3, completed=1)
        t(1)
        t.advance(1, info="loss 0.5")
        t.update(info="done")
    assert [(e.task, e.completed, e.total, e.info) for e in seen] == [
        ("measure", 1, 3, ""), ("measure", 2, 3, ""), ("measure", 3, 3, "loss 0.5"), ("measure", 3, 3, "done")]


def test_true_logs_at_info_false_reports_nothing_and_other_values_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    assert as_callback(False) is None and as_callback(None) is None and not Tasks(False).enabled
    t = Tasks(False).task("quiet", total=2)
    t(2)  # no callback, no error
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        task = Tasks(True, logger=log).task("export", total=20)
        for _ in range(20):
            task(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.progress"]
    assert lines[0].startswith("export: 0/20") and lines[-1].startswith("export: 20/20")
    assert len(lines) == 11  # every 10 % and the end, not every step
    with pytest.raises(TypeError, match="progress"):
        as_callback("yes")  # type: ignore[arg-type]


def test_build_table_reports_every_task_to_completion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A library long-runner (a latency-table build) sends events the CLI can draw; no rich involved."""
    from latency_tables.protocol import MeasurementProtocol
    from latency_tables.table import build_table
    from supernet.layers import Backbone
    from supernet.space import SearchSpace

    space = SearchSpace(name="tiny", resolutions=(24,), depth_choices=(1,), kernel_choices=(3,), expand_choices=(3,))
    pr = MeasurementProtocol(rounds=2, runs_per_round=2, warmups=0, load_warmups=0, processes=1, spawn=False)
    seen: list[ProgressEvent] = []
    build_table(space, Backbone(in_channels=1, num_classes=10, width_mult=0.5), out=tmp_path / "t.csv",
                backend="fake", protocol=pr, progress=seen.append)
    last = {e.task: e for e in seen}
    assert last and all(e.completed == e.total for e in last.values()), last
