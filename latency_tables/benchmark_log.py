"""Parser for the text TFLite's ``benchmark_model`` prints: pure text -> numbers, no I/O beyond `parse_log_file`.

One log file may hold several *runs* (one per invocation of ``benchmark_model``). The phone kit's script
(`latency_tables.kit`) wraps each run in marker lines::

    # hwnas-kit sha256=<kit sha256> key=<layer key> round=<r>
    ...benchmark_model output...
    # hwnas-kit end round=<r> status=<exit code>

Logs captured by hand (no markers) are split at ``STARTING!``. Within a run the parser reads, with or without
the ``INFO: `` prefix of newer builds:

* ``Num threads: [1]``, ``Num runs: [50]`` / ``Min num runs: [50]``, ``Num warmup runs: [10]`` /
  ``Min warmup runs: [10]``, ``Graph: [/path/model.tflite]``;
* the statistics lines ``count=50 first=5678 curr=432 min=420 max=470 avg=432.1 std=9`` (µs; the first block is
  the warm-up, the last the timed runs);
* the summary ``Inference timings in us: Init: 1234, First inference: 5678, Warmup (avg): 456.7,
  Inference (avg): 432.1``.

A run is *ok* when it has an inference average and no error (``ERROR:`` lines, ``Benchmarking failed``,
``Aborted``, a non-zero ``status=`` marker, or adb's ``error:``); otherwise ``error`` says why and
``error_line`` where. Lines that look like statistics but do not parse raise `BenchmarkLogError` naming the
file and line: a parser that silently skips them would turn a format change into wrong latencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supernet.errors import InputError

__all__ = ["BenchmarkLogError", "BenchmarkRun", "parse_log", "parse_log_file"]


class BenchmarkLogError(InputError):
    """A log line that should hold numbers does not; the message names the file and the line."""


@dataclass(frozen=True)
class BenchmarkRun:
    """One invocation of ``benchmark_model`` as read from its log. Times in µs, as the tool prints them.

    ``line`` is the 1-based line where the run starts; ``kit_sha256`` / ``key`` / ``round`` come from the kit's
    marker line (None for hand-captured logs).
    """

    source: str
    line: int
    ok: bool
    error: str | None = None
    error_line: int | None = None
    kit_sha256: str | None = None
    key: str | None = None
    round: int | None = None
    exit_status: int | None = None
    graph: str | None = None
    num_threads: int | None = None
    num_runs: int | None = None
    warmup_runs: int | None = None
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    count: int | None = None
    min_us: float | None = None
    max_us: float | None = None
    std_us: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


_PREFIX = re.compile(r"^(?:(?:INFO|WARNING|VERBOSE|I|W)\s*:\s*|\[[^\]]*\]\s*)?")
_START_MARK = re.compile(r"^#\s*hwnas-kit\s+sha256=(?P<sha>[0-9a-f]{64})\s+key=(?P<key>\S+)\s+round=(?P<round>\d+)\s*$")
_END_MARK = re.compile(r"^#\s*hwnas-kit\s+end\s+round=(?P<round>\d+)\s+status=(?P<status>-?\d+)\s*$")
_PARAM = re.compile(r"^(?P<name>Num threads|Num runs|Min num runs|Num warmup runs|Min warmup runs|Graph)\s*:\s*\[(?P<value>[^\]]*)\]")
_SUMMARY = re.compile(r"^Inference timings in us:\s*(?P<body>.*)$")
_STATS = re.compile(r"^count=")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SUMMARY_FIELDS = {"init": "init_us", "first inference": "first_inference_us", "warmup (avg)": "warmup_avg_us",
                   "inference (avg)": "inference_avg_us"}
_FAIL = re.compile(r"^(?:ERROR:|E\s*:|error:|adb: error|Benchmarking failed|Aborted|Segmentation fault|"
                   r"Failed to|.*: not found$|.*: Permission denied$)")


class _RunBuilder:
    def __init__(self, source: str, line: int, *, sha: str | None = None, key: str | None = None,
                 round_: int | None = None) -> None:
        self.source, self.line = source, line
        self.d: dict[str, Any] = {"kit_sha256": sha, "key": key, "round": round_}
        self.stats: list[dict[str, float]] = []
        self.error: str | None = None
        self.error_line: int | None = None
        self.started = key is not None
        self.lines = 0

    def fail(self, msg: str, lineno: int) -> None:
        if self.error is None:
            self.error, self.error_line = msg, lineno

    def finish(self) -> BenchmarkRun:
        d = dict(self.d)
        if self.stats:
            timed = self.stats[-1]
            d.update(count=int(timed["count"]), min_us=timed.get("min"), max_us=timed.get("max"),
                     std_us=timed.get("std"))
            if d.get("inference_avg_us") is None and len(self.stats) >= 2:
                d["inference_avg_us"] = timed.get("avg")
            if len(self.stats) >= 2:
                d["extra"] = {"warmup_count": int(self.stats[0]["count"])}
        status = d.get("exit_status")
        if self.error is None and status not in (None, 0):
            self.fail(f"benchmark_model exited with status {status}", self.line)
        if self.error is None and d.get("inference_avg_us") is None:
            self.fail("no 'Inference timings' line: the run did not finish (killed, device lost, or truncated log)",
                      self.line)
        return BenchmarkRun(source=self.source, line=self.line, ok=self.error is None, error=self.error,
                            error_line=self.error_line, **d)


def _num(text: str, *, where: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BenchmarkLogError(f"{where}: {what}: expected a number, got {text!r}") from None


def parse_log(text: str, *, source: str = "<log>") -> list[BenchmarkRun]:
    """All runs in ``text`` in order (failed ones included, with ``ok=False``). ``source`` names the file in errors."""
    runs: list[BenchmarkRun] = []
    cur: _RunBuilder | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None and (cur.started or cur.lines):
            runs.append(cur.finish())
        cur = None

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{source}, line {lineno}"
        m = _START_MARK.match(line)
        if m:
            close()
            cur = _RunBuilder(source, lineno, sha=m["sha"], key=m["key"], round_=int(m["round"]))
            continue
        m = _END_MARK.match(line)
        if m:
            if cur is None or not cur.started:
                raise BenchmarkLogError(f"{where}: end marker without a start marker ('# hwnas-kit sha256=...')")
            if cur.d["round"] != int(m["round"]):
                raise BenchmarkLogError(f"{where}: end marker of round {m['round']} closes round {cur.d['round']}")
            cur.d["exit_status"] = int(m["status"])
            close()
            continue
        if line.startswith("#"):
            continue
        body = _PREFIX.sub("", line, count=1)
        if body.startswith("STARTING!"):
            if cur is not None and cur.started and cur.lines == 0:
                cur.lines += 1
                continue
            close()
            cur = _RunBuilder(source, lineno)
            cur.lines += 1
            continue
        if cur is None:
            cur = _RunBuilder(source, lineno)
        cur.lines += 1
        if _FAIL.match(body) or _FAIL.match(line):
            cur.fail(body, lineno)
            continue
        m = _PARAM.match(body)
        if m:
            name, value = m["name"], m["value"].strip()
            if name == "Graph":
                cur.d["graph"] = value
            else:
                target = {"Num threads": "num_threads", "Num runs": "num_runs", "Min num runs": "num_runs",
                          "Num warmup runs": "warmup_runs", "Min warmup runs": "warmup_runs"}[name]
                cur.d[target] = int(_num(value, where=where, what=name))
            continue
        m = _SUMMARY.match(body)
        if m:
            found = 0
            for part in m["body"].split(","):
                if not part.strip():
                    continue
                if ":" not in part:
                    raise BenchmarkLogError(f"{where}: 'Inference timings' entry {part.strip()!r} has no ':'")
                k, v = part.split(":", 1)
                attr = _SUMMARY_FIELDS.get(k.strip().lower())
                if attr is not None:
                    cur.d[attr] = _num(v.strip(), where=where, what=k.strip())
                    found += 1
            if "inference_avg_us" not in cur.d or cur.d["inference_avg_us"] is None:
                raise BenchmarkLogError(f"{where}: 'Inference timings' line without 'Inference (avg)': {body!r}")
            continue
        if _STATS.match(body):
            stats: dict[str, float] = {}
            for tok in body.split():
                if "=" not in tok:
                    continue
                k, v = tok.split("=", 1)
                stats[k] = _num(v, where=where, what=k)
            for k in ("count", "avg"):
                if k not in stats:
                    raise BenchmarkLogError(f"{where}: statistics line without {k}=: {body!r}")
            cur.stats.append(stats)
            continue
    close()
    return runs


def parse_log_file(path: str | Path) -> list[BenchmarkRun]:
    """`parse_log` on a file (UTF-8, undecodable bytes replaced: device logs can hold garbage)."""
    p = Path(path)
    return parse_log(p.read_text(encoding="utf-8", errors="replace"), source=str(p))
