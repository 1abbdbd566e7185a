"""Latency of structurally pruned subnets: price their layers from a table, or measure the new shapes.

A pruned block keeps an arbitrary number of expanded channels (`supernet.prune.PrunedArch`), so its `LayerSpec`
(``mid_ch``) is in no table built for a search space, whose rows cover the widths of the expand ratios only. Nothing
here prices such a layer with a row of another width: `price_pruned` raises `UnpricedLayerError` naming every layer
the table lacks, and `extend_table` measures exactly those layers with the table's backend, settings and protocol,
on the table's scale (each new row's ratio to the reference probe times the table's reference latency, as
`build_table` computes every row), and writes the extended table (CSV + manifest) to a new path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.predictor import FEATURES, LatencyPredictor
from latency_tables.table import LatencyTable, MissingLayerError, TableRow
from supernet.errors import InputError
from supernet.layers import LayerSpec
from supernet.prune import PrunedArch

__all__ = ["UnpricedLayerError", "extend_table", "missing_layers", "predict_pruned", "price_pruned"]

log = logging.getLogger(__name__)


class UnpricedLayerError(MissingLayerError, InputError):
    """A latency table has no row for some layers of a (pruned) network; the message lists them (bad input for a
    command: the CLI reports it and exits 2)."""


def missing_layers(table: LatencyTable, specs: Sequence[LayerSpec]) -> list[LayerSpec]:
    """The distinct layers of ``specs`` the table has no row for, in network order."""
    seen: dict[str, LayerSpec] = {}
    for s in specs:
        if s.key not in table.rows:
            seen.setdefault(s.key, s)
    return list(seen.values())


def price_pruned(table: LatencyTable, pruned: PrunedArch, *, precision: str | None = None) -> list[tuple[LayerSpec, float]]:
    """Each layer of ``pruned`` with its table latency (ms). `UnpricedLayerError` if any layer has no row."""
    table.check_precision(precision)
    table.specs(pruned.arch)  # the architecture must belong to the table's space (ArchOutsideTableError)
    specs = pruned.specs(table.backbone)
    missing = missing_layers(table, specs)
    if missing:
        where = str(table.path) if table.path is not None else "<in-memory table>"
        shown = ", ".join(s.key for s in missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise UnpricedLayerError(
            f"latency table {where} cannot price the pruned subnet {pruned}: {len(missing)} of its layers have no "
            f"row ({shown}). Its rows cover the expanded widths of the space's expand ratios only, and a row of "
            "another width would price the layer wrongly; measure the new shapes with "
            "latency_tables.pruned.extend_table (hwnas prune ... --measure-missing) or price the unpruned subnet")
    return [(s, table.rows[s.key].latency_ms) for s in specs]


def predict_pruned(predictor: LatencyPredictor, pruned: PrunedArch, *, precision: str | None = None) -> float:
    """Predicted latency (ms) of ``pruned``: the plain sum, or the predictor's correction applied to the pruned
    network's features when fitted. The correction was fitted on unpruned subnets: a pruned one may lie outside
    its data (fewer expanded channels per MAC), so compare with a measurement before relying on it."""
    rows = price_pruned(predictor.table, pruned, precision=precision)
    total = float(sum(ms for _, ms in rows))
    if predictor.coef is None:
        return total
    x = np.asarray([FEATURES[f](rows) for f in predictor.features])
    return float(max(predictor.intercept_ms + x @ np.asarray(predictor.coef), 0.1 * total))


def extend_table(
    table: LatencyTable,
    specs: Sequence[LayerSpec],
    *,
    out: str | Path,
    protocol: Any = None,
    export_jobs: int = 1,
) -> LatencyTable:
    """Measure the layers of ``specs`` that ``table`` lacks, with its backend and settings, and write the table
    plus those rows to ``out`` (``out.meta.json`` beside it). Rows already in the table are not re-measured.

    The new rows are on the table's scale: ratio to the reference probe (measured in the same session) times the
    table's ``reference.latency_ms``. ``protocol`` (a `latency_tables.protocol.MeasurementProtocol`) defaults
    to the table's.
    The manifest records the added keys under ``environment.extended``. Returns the extended table.
    """
    from latency_tables.backends import create_backend
    from latency_tables.protocol import MeasurementProtocol, WorkerPool, chunked, fit_chunk, summarise
    from latency_tables.table import (
        artifact_tag,
        layer_entry,
        prepare_items,
        reference_entry,
        table_backend_kwargs,
    )

    todo = missing_layers(table, specs)
    if not todo:
        return table.save(out) if table.path is None or Path(out) != table.path else table
    pr = protocol or MeasurementProtocol.from_json(table.meta.protocol)
    bkw = {"threads": table.meta.threads, "precision": table.meta.precision, **table_backend_kwargs(table.meta)}
    be = create_backend(table.meta.backend, **bkw)
    if be.version != table.meta.backend_version:
        log.warning("extending table %s measured with %s %s using version %s", table.path, table.meta.backend,
                    table.meta.backend_version, be.version)
    t0 = time.perf_counter()
    outp = Path(out)
    workdir = outp.parent / f".{outp.name}.extend-work"
    workdir.mkdir(parents=True, exist_ok=True)
    tag = artifact_tag(bkw)
    ref_item = prepare_items([reference_entry()], be, workdir, tag=tag)[0]
    items = prepare_items([layer_entry(s) for s in todo], be, workdir, tag=tag, jobs=export_jobs,
                           backend_spec=(table.meta.backend, bkw))
    chunks: list[Any] = []
    with WorkerPool(table.meta.backend, bkw, pr) as pool:
        for chunk in chunked(items, pr.chunk_size):
            chunks.append(pool.measure_chunk(chunk, ref_item, chunk_index=len(chunks)))
    reference_ms = float(table.meta.reference["latency_ms"])
    rows = dict(table.with_statistic(table.meta.statistic).rows)  # rows answer in the manifest's default statistic
    by_key = {s.key: s for s in todo}
    for c in chunks:
        fit = fit_chunk(c, pr)  # every named statistic, each on the table's probe scale
        for i, k in enumerate(fit.keys):
            m = summarise(fit, i, reference_ms=reference_ms, protocol=pr)
            stats = {st: m.stat(st) for st in table.meta.statistics}  # the statistics the table has, no more
            rows[k] = TableRow(spec=by_key[k], latency_ms=stats[table.meta.statistic], ratio=m.ratio,
                               p50_ms=m.p50_ms, iqr_ms=m.iqr_ms, runs=m.runs, stats=stats)
    extended = {"keys": sorted(by_key), "source_table": str(table.path) if table.path else None,
                "source_csv_sha256": table.meta.csv_sha256, "seconds": round(time.perf_counter() - t0, 2)}
    env = {**table.meta.environment, "extended": [*table.meta.environment.get("extended", []), extended]}
    meta = replace(table.meta, n_rows=len(rows), csv_sha256="", environment=env)
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    return LatencyTable(rows=dict(sorted(rows.items())), meta=meta).save(outp)
