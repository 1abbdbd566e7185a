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

Bounded input: a body larger than ``max_body_bytes`` (single) or ``max_batch * MAX_ARCH_BYTES`` (batch) answers
413 before it is parsed (checked on Content-Length, and again while reading, so a client that lies or streams
chunks cannot exceed it). Bodies are parsed as strict JSON (``NaN``/``Infinity`` answer 422), and no error
message repeats the request: details name the field and are cut to `MAX_DETAIL_CHARS`.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request  # at module level: FastAPI resolves the endpoints' annotations here

from latency_tables.predictor import LatencyPredictor, as_arch, resolve_table
from latency_tables.table import LatencyTable, LatencyTableError
from supernet.space import InvalidArchError

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "MAX_ARCH_BYTES", "BatchRequest", "PredictRequest",
           "create_app", "serve"]

DEFAULT_MAX_BATCH = 1024
MAX_ARCH_BYTES = 4096  # an architecture as JSON is < 2 kB even in the OFA space; a batch body is bounded by this
DEFAULT_MAX_BODY_BYTES = 16 * 1024  # one architecture plus the precision field
MAX_DETAIL_CHARS = 300


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
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Any:
    """A FastAPI app answering latency queries from ``table`` (and a fitted ``predictor`` when given)."""
    from fastapi import FastAPI, HTTPException
    from starlette.concurrency import run_in_threadpool

    if max_batch < 1 or max_body_bytes < 64:
        raise ValueError(f"max_batch >= 1 and max_body_bytes >= 64 expected, got {max_batch}, {max_body_bytes}")
    batch_body_bytes = max_batch * MAX_ARCH_BYTES + 1024

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
        except (InvalidArchError, LatencyTableError, ValueError, TypeError, KeyError) as e:
            raise HTTPException(status_code=422, detail=_cut(str(e))) from None

    async def _read_json(request: Request, limit: int) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, detail=f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, detail=f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks), parse_constant=_no_constant, parse_float=_finite_float)
        except _NonFinite as e:
            raise HTTPException(422, detail=f"body: {e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
            raise HTTPException(422, detail=f"body is not valid JSON{where}") from None

    def _validated(model: type[BaseModel], obj: Any) -> Any:
        try:
            return model.model_validate(obj)
        except ValidationError as e:  # field paths and messages only: pydantic's "input" would echo the body
            errs = "; ".join(f"{'.'.join(str(p) for p in er['loc']) or 'body'}: {er['msg']}" for er in e.errors())
            raise HTTPException(422, detail=_cut(errs)) from None

    def _name(a: Any) -> str:
        return a if isinstance(a, str) else str(as_arch(a, tab))

    @app.get("/health")
    def health() -> dict[str, Any]:
        m = tab.meta
        return {"status": "ok", "table": str(tab.path) if tab.path else None, "rows": len(tab), "backend": m.backend,
                "device": m.device, "precision": m.precision, "space": m.space.get("name"), "predictor": kind,
                "max_batch": max_batch}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        req = _validated(PredictRequest, await _read_json(request, max_body_bytes))
        (ms,) = await run_in_threadpool(_predict, [req.arch], req.precision)
        return {"arch": _name(req.arch), "predicted_ms": ms, "precision": tab.precision, "predictor": kind}

    @app.post("/predict/batch")
    async def predict_batch(request: Request) -> dict[str, Any]:
        obj = await _read_json(request, batch_body_bytes)
        if isinstance(obj, dict) and isinstance(obj.get("archs"), list) and len(obj["archs"]) > max_batch:
            raise HTTPException(422, detail=f"archs: {len(obj['archs'])} architectures, at most {max_batch} per batch")
        req = _validated(BatchRequest, obj)
        ms = await run_in_threadpool(_predict, list(req.archs), req.precision)
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
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Run the service with uvicorn until interrupted (localhost only unless ``host`` says otherwise)."""
    import uvicorn

    uvicorn.run(create_app(table, predictor=predictor, max_batch=max_batch, max_body_bytes=max_body_bytes),
                host=host, port=port, log_level="info")


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NonFinite(f"{name} is not a JSON number (send finite numbers)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _NonFinite("a number overflows to infinity (send finite numbers)")
    return v


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "... (cut)"
