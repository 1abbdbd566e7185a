"""The HTTP service, started for real (uvicorn) on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from latency_tables.service import create_app
from latency_tables.table import LatencyTable
from supernet.space import SearchSpace


@pytest.fixture()
def server(fake_table: LatencyTable) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(fake_table, max_batch=4), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(timeout=10)


def test_health(server: str, fake_table: LatencyTable) -> None:
    r = httpx.get(f"{server}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["rows"] == len(fake_table) and body["predictor"] == "plain_sum"


def test_single_and_batch_predictions_match_the_library(server: str, fake_table: LatencyTable, small_space: SearchSpace) -> None:
    a, b = small_space.smallest(), small_space.largest()
    r = httpx.post(f"{server}/predict", json={"arch": str(a)})
    assert r.status_code == 200 and r.json()["predicted_ms"] == pytest.approx(fake_table.sum_ms(a))
    r = httpx.post(f"{server}/predict/batch", json={"archs": [str(a), b.to_json()]})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["arch"] for p in preds] == [str(a), str(b)]
    assert preds[1]["predicted_ms"] == pytest.approx(fake_table.sum_ms(b))


def test_bad_input_is_422_with_an_explanation(server: str, small_space: SearchSpace) -> None:
    r = httpx.post(f"{server}/predict", json={"arch": "r99-d1.1.1.1.1-k3e3_k3e3_k3e3_k3e3_k3e3"})
    assert r.status_code == 422 and "resolution: 99" in r.json()["detail"]
    r = httpx.post(f"{server}/predict", json={"arch": "garbage"})
    assert r.status_code == 422 and "expected the form" in r.json()["detail"]
    r = httpx.post(f"{server}/predict/batch", json={"archs": [str(small_space.smallest()), "garbage"]})
    assert r.status_code == 422 and "archs[1]" in r.json()["detail"]
    r = httpx.post(f"{server}/predict", json={"wrong": 1})
    assert r.status_code == 422
    r = httpx.post(f"{server}/predict/batch", json={"archs": [str(small_space.smallest())] * 5})
    assert r.status_code == 422 and "at most 4" in r.text


# ----------------------------------------------------------------------------- issue 16.5: bounded input
def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def test_oversized_bodies_are_413_before_parsing_without_memory_growth(server: str) -> None:
    from latency_tables.service import DEFAULT_MAX_BODY_BYTES

    r = httpx.post(f"{server}/predict", content=b'{"arch": "' + b"x" * (20 << 20) + b'"}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 500, "the error must not echo the body"
    assert str(DEFAULT_MAX_BODY_BYTES) in r.json()["detail"]
    # a streamed (chunked, no Content-Length) 200 MB body: refused while reading, never held in memory
    before = _peak_rss_mb()

    def chunks():
        yield b'{"arch": "'
        for _ in range(200):
            yield b"x" * (1 << 20)
        yield b'"}'

    try:
        r = httpx.post(f"{server}/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered 413 and closed the connection while the client was still sending
    assert _peak_rss_mb() - before < 60, "the server buffered the oversized body"
    # a 1,000,000-architecture batch: refused on its size before any parsing
    body = b'{"archs": [' + b",".join([b'"r24-d1.1.1.1.1-k3e3_k3e3_k3e3_k3e3_k3e3"'] * 1_000_000) + b"]}"
    r = httpx.post(f"{server}/predict/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 500
    assert httpx.get(f"{server}/health").status_code == 200


def test_nan_and_bad_json_are_422_and_never_echoed(server: str) -> None:
    for raw in (b'{"arch": NaN}', b'{"arch": {"resolution": Infinity}}', b'{"arch": {"resolution": 1e999}}',
                b'{"archs": [NaN]}'):
        path = "/predict/batch" if b"archs" in raw else "/predict"
        r = httpx.post(f"{server}{path}", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
        assert "not a JSON number" in r.text or "infinity" in r.text
    r = httpx.post(f"{server}/predict", content=b'{"arch": "r24', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    secret = "S3CRET" * 1500  # 9 kB of input: no error may repeat it
    for payload in ({"arch": secret}, {"arch": 5, "precision": secret}, {"archs": [secret]}, {"arch": {"x": secret}}):
        path = "/predict/batch" if "archs" in payload else "/predict"
        r = httpx.post(f"{server}{path}", json=payload)
        assert r.status_code == 422 and len(r.text) < 1000 and secret[:300] not in r.text, r.text[:300]
