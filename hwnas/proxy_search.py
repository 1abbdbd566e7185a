"""Search at real latency targets without a supernet trained at the table's resolutions: LUT latency (any
statistic: median, p99, ...) as the constraint, a stated accuracy proxy (`nas.proxy`) as the objective, and the
winners re-measured end to end on this machine when the table is from it.

Used by ``hwnas search --accuracy proxy-macs`` and by ``benchmarks/latency.py --space ofa-mbv3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ProxySearchResult", "search_with_proxy"]


@dataclass(frozen=True)
class ProxySearchResult:
    """One winner per target. ``measured_ms`` is the winner's latency re-measured end to end (the table's
    backend, threads and precision, same statistic), None when not measured."""

    target_ms: float
    arch: str
    arch_json: dict[str, Any]
    proxy: float
    predicted_ms: float
    statistic: str
    accuracy_source: str
    measured_ms: float | None = None
    meets_target_measured: bool | None = None
    measurement: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def search_with_proxy(
    table_path: str | Path,
    *,
    targets_ms: Sequence[float],
    predictor_path: str | Path | None = None,
    statistic: str | None = None,
    proxy: str = "macs",
    strategy: str = "evolution",
    budget: int = 300,
    seed: int = 0,
    measure: bool = True,
    protocol: Any = None,
) -> list[ProxySearchResult]:
    """For each target, the subnet maximising the proxy whose predicted ``statistic`` latency is <= the target
    (hard constraint), then (``measure``) all winners measured end to end in one protocol run."""
    from latency_tables.predictor import LatencyPredictor
    from latency_tables.table import LatencyTable
    from nas.objective import Objective
    from nas.proxy import PROXIES, macs_proxy
    from nas.reward import Reward
    from nas.search import search
    from supernet.errors import InputError

    if proxy not in PROXIES:
        raise InputError(f"--accuracy proxy-{proxy}: unknown proxy; known: {', '.join('proxy-' + p for p in PROXIES)}")
    table = LatencyTable.load(table_path, statistic=statistic)
    if predictor_path is not None:
        pred = LatencyPredictor.load(predictor_path, table=table)
    else:
        pred = LatencyPredictor.from_table(table)
    stat = table.statistic
    acc_fn = macs_proxy(table.backbone)
    source = f"proxy-{proxy}: {PROXIES[proxy]}"
    out: list[ProxySearchResult] = []
    for t in targets_ms:
        obj = Objective(space=table.space, accuracy_fn=acc_fn, latency_fn=lambda c: pred.predict(list(c)),
                        reward=Reward.hard(float(t)), precision=table.precision)
        res = search(table.space, obj, strategy=strategy, budget=budget, seed=seed)
        best = res.best
        out.append(ProxySearchResult(
            target_ms=float(t), arch=str(best.arch), arch_json=best.arch.to_json(), proxy=float(best.accuracy),
            predicted_ms=float(best.latency_ms), statistic=stat, accuracy_source=source,
        ))
    if measure and out:
        from dataclasses import replace

        from hwnas.pipeline import measure_on_table

        archs = [table.space.canonical(table.space.parse(r.arch)) for r in out]
        ms = measure_on_table(archs, table, table.backbone, protocol=protocol)
        out = [replace(r, measured_ms=m.stat(stat), meets_target_measured=bool(m.stat(stat) <= r.target_ms),
                       measurement={"protocol": dict(m.environment.get("protocol", {})), "scale":
                                    m.environment.get("scale"), "stats_ms": dict(m.stats_ms)})
               for r, m in zip(out, ms, strict=True)]
    return out


def summary_rate(results: Sequence[ProxySearchResult]) -> float | None:
    """Share of winners meeting their target when re-measured (None when none was measured)."""
    flags = [r.meets_target_measured for r in results if r.meets_target_measured is not None]
    return float(np.mean(flags)) if flags else None
