"""HTTP query service over a latency table (FastAPI + uvicorn, bound to localhost by default).

Endpoints:
    GET  /health          -> table, rows, backend, device, precision, predictor kind, max batch
    POST /predict         {"arch": "<str(arch)>" | {arch JSON}, "precision"?}  -> {"arch", "predicted_ms", "precision",
                                                                                 "predictor"}
    POST /predict/batch   {"archs": [...], "precision"?} (at most ``max_batch``) -> {"predictions": [...], "precision",
                                                                                 "predictor"}
The precision is the table's; a request may state the precision it means, and one that differs answers 422 (an
fp32 table never answers for int8). Invalid architectures (malformed, outside the table's space) and oversized
batches answer 422 with a message saying what is wrong and where (``detail``).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from latency_tables.predictor import LatencyPredictor, as_arch, resolve_table
from latency_tables.table import LatencyTable, LatencyTableError
from supernet.space import InvalidArchError

__all__ = ["DEFAULT_MAX_BATCH", "BatchRequest", "PredictRequest", "create_app", "serve"]

DEFAULT_MAX_BATCH = 1024


_PRECISION_FIELD = "precision the caller means (fp32, fp16, int8); must be the table's. Default: the table's"


class PredictRequest(BaseModel):
    arch: str | dict[str, Any] = Field(description="architecture string (str(ArchConfig)) or its JSON object")
    precision: str | None = Field(default=None, description=_PRECISION_FIELD)


class BatchRequest(BaseModel):
    archs: list[str | dict[str, Any]] = Field(min_length=1, description="architectures (strings or JSON objects)")
    precision: str | None = Field(default=None, description=_PRECISION_FIELD)


def create_app(
    table: LatencyTable | str | os.PathLike[str],
    *,
    predictor: LatencyPredictor | str | os.PathLike[str] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Any:
    """A FastAPI app answering latency queries from ``table`` (and a fitted ``predictor`` when given)."""
    from fastapi import FastAPI, HTTPException

    tab = resolve_table(table)
    if predictor is None:
        pred = LatencyPredictor.from_table(tab)
    elif isinstance(predictor, LatencyPredictor):
        pred = predictor
    else:
        from latency_tables.predictor import predictor_statistic

        tab = tab.with_statistic(predictor_statistic(predictor))
        pred = LatencyPredictor.load(predictor, table=tab)
    kind = "corrected" if pred.fitted else "plain_sum"

    app = FastAPI(title="hwnas latency predictor", version="1")

    def _predict(archs: list[Any], precision: str | None) -> list[float]:
        try:
            tab.check_precision(precision)
            cfgs = []
            for i, a in enumerate(archs):
                try:
                    cfgs.append(as_arch(a, tab))
                except InvalidArchError as e:
                    raise InvalidArchError(f"archs[{i}]: {e}") if len(archs) > 1 else e from None
            return [float(v) for v in pred.predict(cfgs, precision=precision)]
        except (InvalidArchError, LatencyTableError) as e:
            raise HTTPException(status_code=422, detail=str(e)) from None

    def _name(a: Any) -> str:
        return a if isinstance(a, str) else str(as_arch(a, tab))

    @app.get("/health")
    def health() -> dict[str, Any]:
        m = tab.meta
        return {"status": "ok", "table": str(tab.path) if tab.path else None, "rows": len(tab), "backend": m.backend,
                "device": m.device, "precision": m.precision, "space": m.space.get("name"), "predictor": kind,
                "max_batch": max_batch}

    @app.post("/predict")
    def predict(req: PredictRequest) -> dict[str, Any]:
        (ms,) = _predict([req.arch], req.precision)
        return {"arch": _name(req.arch), "predicted_ms": ms, "precision": tab.precision, "predictor": kind}

    @app.post("/predict/batch")
    def predict_batch(req: BatchRequest) -> dict[str, Any]:
        if len(req.archs) > max_batch:
            raise HTTPException(status_code=422, detail=f"archs: {len(req.archs)} architectures, at most {max_batch} per batch")
        ms = _predict(list(req.archs), req.precision)
        return {"predictions": [{"arch": _name(a), "predicted_ms": v} for a, v in zip(req.archs, ms, strict=True)],
                "precision": tab.precision, "predictor": kind}

    return app


def serve(
    table: LatencyTable | str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    predictor: LatencyPredictor | str | os.PathLike[str] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> None:
    """Run the service with uvicorn until interrupted (localhost only unless ``host`` says otherwise)."""
    import uvicorn

    uvicorn.run(create_app(table, predictor=predictor, max_batch=max_batch), host=host, port=port, log_level="info")
