"""Helpers shared by the latency_tables tests (unique module name, so importing it never picks up another
test folder's ``conftest``)."""

from __future__ import annotations

from latency_tables.protocol import Protocol

# in-process (no spawned workers), few rounds: fast and deterministic with the fake backend
FAKE_PROTOCOL = Protocol(rounds=3, runs_per_round=5, warmups=1, load_warmups=1, processes=3, chunk_size=16,
                         spawn=False)
