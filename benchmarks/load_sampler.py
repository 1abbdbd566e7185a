"""The machine's 1-minute load average, sampled beside a benchmark (the machine is shared), for every script in
``benchmarks/`` that reports it."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Self


class LoadSampler:
    """Samples ``os.getloadavg()[0]`` every ``period_s`` in a daemon thread, into ``samples`` as (time, load1).

    With ``path``, every sample is also appended to it (JSON lines) and the samples already there are read back at
    start, so a benchmark resumed over several invocations reports the load over all of them."""

    def __init__(self, path: Path | None = None, period_s: float = 10.0) -> None:
        self.path, self.period_s = path, period_s
        self.samples: list[tuple[float, float]] = []
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    d = json.loads(line)
                    self.samples.append((float(d["t"]), float(d["load1"])))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = (time.time(), os.getloadavg()[0])
            self.samples.append(sample)
            if self.path is not None:
                with self.path.open("a") as fh:
                    fh.write(json.dumps({"t": sample[0], "load1": sample[1]}) + "\n")
            self._stop.wait(self.period_s)

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=5)

    def between(self, t0: float, t1: float) -> dict[str, Any]:
        """Load over the wall-clock interval [t0, t1] (the current load when no sample fell in it)."""
        one = [x for t, x in self.samples if t0 <= t <= t1] or [os.getloadavg()[0]]
        return {"load1_min": min(one), "load1_median": statistics.median(one), "load1_max": max(one),
                "samples": len(one), "cpus": os.cpu_count()}

    def summary(self) -> dict[str, Any]:
        """Load over every sample; just the count when there are fewer than 4 (too few to describe a load)."""
        vals = [x for _, x in self.samples]
        if len(vals) < 4:  # e.g. a re-render of a finished benchmark
            return {"samples": len(vals)}
        return {"samples": len(vals), "load1_min": min(vals), "load1_median": float(statistics.median(vals)),
                "load1_max": max(vals), "period_s": self.period_s}
