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
