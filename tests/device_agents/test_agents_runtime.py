"""AdaptiveModel on real ONNX files, the model server (in-process and as a real uvicorn subprocess), fallback."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import device_agents.runtime as runtime_mod
from device_agents import Decision, DeviceState, Policy, Variant, create_provider
from device_agents.client import OffloadClient, OffloadError
from device_agents.runtime import AdaptiveModel
from device_agents.server import create_model_app
from device_agents.sessions import resize_nchw
from supernet.export import run_onnx

X = np.random.default_rng(0).standard_normal((1, 1, 16, 16)).astype(np.float32)


def _provider() -> object:
    return create_provider("trace", trace="steady", loop=True)


class _Alternate(Policy):
    """Switches variant on every decision: the worst case for switching."""

    name = "alternate"

    def __init__(self, variants: Sequence[Variant]) -> None:
        self._vs = list(variants)
        self._i = 0

    def decide(self, state: DeviceState, *, deadline_ms: float) -> Decision:
        self._i += 1
        v = self._vs[self._i % len(self._vs)]
        return Decision(variant=v, expected_latency_ms=v.predicted_latency_ms, reason="alternate")


def _expected(v: Variant, x: np.ndarray) -> np.ndarray:
    from device_agents.sessions import open_session

    shape = open_session(v.model_path or "").input_shape
    return run_onnx(v.model_path or "", resize_nchw(x, shape))


def test_resize_is_identity_at_native_size_and_keeps_constants() -> None:
    assert resize_nchw(X, (1, 1, 16, 16)) is X or np.array_equal(resize_nchw(X, (1, 1, 16, 16)), X)
    c = np.full((1, 1, 16, 16), 3.5, dtype=np.float32)
    assert np.allclose(resize_nchw(c, (1, 1, 7, 9)), 3.5)
    with pytest.raises(ValueError, match="channels"):
        resize_nchw(X, (1, 3, 8, 8))


def test_outputs_match_onnxruntime_and_sessions_are_cached(
    tiny_variants: tuple[Variant, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = AdaptiveModel(tiny_variants, deadline_ms=1000.0, policy=_Alternate(tiny_variants), provider=_provider(),
                          log_path=tmp_path / "log.jsonl")
    opened: list[str] = []
    monkeypatch.setattr(runtime_mod, "open_session", lambda *a, **k: opened.append(str(a)))
    with model:
        for _ in range(6):
            p = model.predict(X)
            v = next(v for v in tiny_variants if v.name == p.record.ran)
            np.testing.assert_allclose(p.output, _expected(v, X), rtol=1e-5, atol=1e-6)
    assert opened == []  # six switches, no session created after construction
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and len({r["ran"] for r in lines}) == 3
    assert {"state", "deadline_ms", "option", "reason", "expected_latency_ms", "latency_ms", "missed"} <= set(lines[0])
    assert lines[0]["state"]["cpu_freq_mhz"] > 0


def test_no_request_dropped_while_switching_from_threads(tiny_variants: tuple[Variant, ...]) -> None:
    errors: list[BaseException] = []
    results: list[tuple[str, np.ndarray]] = []
    with AdaptiveModel(tiny_variants, deadline_ms=1000.0, policy=_Alternate(tiny_variants),
                       provider=_provider()) as model:

        def worker() -> None:
            try:
                for _ in range(15):
                    p = model.predict(X)
                    results.append((p.record.ran, p.output))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and len(results) == 60 and len(model.records) == 60
        assert sorted(r.request_id for r in model.records) == list(range(1, 61))
    expected = {v.name: _expected(v, X) for v in tiny_variants}
    for ran, out in results:
        np.testing.assert_allclose(out, expected[ran], rtol=1e-5, atol=1e-6)


def test_agent_picks_by_deadline(tiny_variants: tuple[Variant, ...]) -> None:
    with AdaptiveModel(tiny_variants, deadline_ms=1e4, provider=_provider()) as roomy:
        assert roomy.predict(X).record.option == tiny_variants[-1].name  # everything fits: the most accurate
    with AdaptiveModel(tiny_variants, deadline_ms=1.5, provider=_provider(), policy="greedy") as tight:
        assert tight.predict(X).record.option == tiny_variants[0].name  # predicted 1/2/4 ms: only the smallest


def test_broken_local_session_falls_back(tiny_variants: tuple[Variant, ...], caplog: pytest.LogCaptureFixture) -> None:
    with AdaptiveModel(tiny_variants, deadline_ms=1e4, provider=_provider()) as model:
        broken = model._sessions[tiny_variants[-1].name]

        def boom(x: np.ndarray) -> np.ndarray:
            raise RuntimeError("corrupt weights")

        broken.run = boom  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="device_agents.runtime"):
            p = model.predict(X)
    assert p.record.option == tiny_variants[-1].name and p.record.ran == tiny_variants[0].name
    assert "corrupt weights" in (p.record.fallback or "") and "corrupt weights" in caplog.text
    np.testing.assert_allclose(p.output, _expected(tiny_variants[0], X), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- server, in process
@pytest.fixture
def client(tiny_variants: tuple[Variant, ...]) -> Iterator[object]:
    from fastapi.testclient import TestClient

    app = create_model_app(tiny_variants[-1].model_path or "", name="big", accuracy=0.95, max_payload_bytes=4096)
    with TestClient(app) as c:
        yield c


def _post(c: object, x: np.ndarray, *, shape: str | None = None, ctype: str = "application/octet-stream") -> object:
    headers = {"Content-Type": ctype, "X-Input-Shape": shape or ",".join(map(str, x.shape))}
    return c.post("/v1/infer", content=np.ascontiguousarray(x, "<f4").tobytes(), headers=headers)  # type: ignore[attr-defined]


def test_server_answers_and_validates(client: object, tiny_variants: tuple[Variant, ...]) -> None:
    h = client.get("/health").json()  # type: ignore[attr-defined]
    assert h["model"] == "big" and h["accuracy"] == 0.95 and h["input_shape"] == [1, 1, 16, 16]
    x12 = X[:, :, :12, :12].copy()
    r = _post(client, x12)
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    np.testing.assert_allclose(np.reshape(body["output"], body["output_shape"]), _expected(tiny_variants[-1], x12),
                               rtol=1e-5, atol=1e-6)
    assert body["server_ms"] >= 0
    assert _post(client, X, ctype="application/json").status_code == 415  # type: ignore[attr-defined]
    assert _post(client, X, shape="1,1,16").status_code == 422  # type: ignore[attr-defined]
    assert _post(client, X, shape="1,3,16,16").status_code == 422  # type: ignore[attr-defined]
    assert _post(client, X, shape="1,1,8,8").status_code == 422  # type: ignore[attr-defined]  (length mismatch)
    assert _post(client, np.zeros((1, 1, 40, 40), np.float32)).status_code == 413  # type: ignore[attr-defined]
    nan = X.copy()
    nan[0, 0, 0, 0] = np.nan
    r = _post(client, nan)
    assert r.status_code == 422 and "NaN" in r.text  # type: ignore[attr-defined]


def test_client_error_on_closed_port() -> None:
    port = _free_port()
    c = OffloadClient(f"http://127.0.0.1:{port}", timeout_s=0.5)
    with pytest.raises(OffloadError, match="127.0.0.1"):
        c.infer(X)
    with pytest.raises(OffloadError, match="health check failed"):
        c.health()
    c.close()


# --------------------------------------------------------------------------- a real server process
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server_process(model_path: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    code = ("import sys; from device_agents.server import serve_model; "
            "serve_model(sys.argv[1], port=int(sys.argv[2]), name='server-model', accuracy=0.99)")
    proc = subprocess.Popen([sys.executable, "-c", code, model_path, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        probe = OffloadClient(url, timeout_s=1.0)
        for _ in range(300):  # up to ~30 s for the interpreter to start on a loaded machine
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                probe.health()
                break
            except OffloadError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not come up")
        probe.close()
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_offload_to_real_server_then_local_fallback_when_it_dies(
    tiny_variants: tuple[Variant, ...], caplog: pytest.LogCaptureFixture
) -> None:
    with _server_process(tiny_variants[-1].model_path or "") as (proc, url):
        client = OffloadClient(url, timeout_s=2.0)
        model = AdaptiveModel(tiny_variants, deadline_ms=1e4, provider=_provider(), offload=client,
                              probe_interval_s=1e6)
        assert model.offload_target is not None and model.offload_target.accuracy == 0.99
        p = model.predict(X)
        assert p.record.offload and p.record.ran == "offload:server" and p.record.fallback is None
        np.testing.assert_allclose(p.output, _expected(tiny_variants[-1], X), rtol=1e-5, atol=1e-6)
        proc.kill()
        proc.wait(timeout=10)
        with caplog.at_level(logging.WARNING, logger="device_agents.runtime"):
            q = model.predict(X)
        assert q.record.option == "offload:server" and not q.record.ran.startswith("offload")
        assert "offload failed" in (q.record.fallback or "") and "offload failed" in caplog.text
        expected = next(v for v in tiny_variants if v.name == q.record.ran)
        np.testing.assert_allclose(q.output, _expected(expected, X), rtol=1e-5, atol=1e-6)
        r = model.predict(X)  # the link is marked down: local without trying the server
        assert not r.record.offload and r.record.fallback is None
        model.close()
