"""A model server in a child process (`ServerProcess`): started, health-checked, killed and restarted on demand.

The command is the caller's (e.g. ``[python, -c, "from hwnas.cli import main; main()", serve-model, --bundle, B,
--port, P]``): this library never imports the CLI. The child is always stopped by `stop` / the ``with`` block
(terminate, then kill after a grace period).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import IO, Any, Self

__all__ = ["ServerProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """Runs ``command`` (a model server listening on ``url``) as a child process; see the module docstring."""

    def __init__(self, command: Sequence[str], *, url: str, start_timeout_s: float = 60.0,
                 log: IO[str] | None = None) -> None:
        self.command = list(command)
        self.url = url.rstrip("/")
        self.start_timeout_s = float(start_timeout_s)
        self._log = log
        self._proc: subprocess.Popen[Any] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the child and wait until ``GET /health`` answers (`TimeoutError` after ``start_timeout_s``)."""
        import httpx

        if self.running:
            return
        self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                      stdout=self._log or subprocess.DEVNULL, stderr=self._log or subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"model server exited with code {self._proc.returncode} during start-up: "
                                   f"{' '.join(self.command)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"model server at {self.url} not healthy after {self.start_timeout_s:g} s")

    def kill(self) -> None:
        """SIGKILL the child (a crash, not a shutdown) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self.kills += 1

    def stop(self) -> None:
        """Terminate the child (kill after 5 s). Idempotent."""
        p, self._proc = self._proc, None
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(OSError):
            p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
