"""Two worker processes on one study in a real PostgreSQL server (optional: skipped when PostgreSQL is absent).

A throwaway cluster is created in a temporary folder (``initdb``), served on a free loopback port with Unix
sockets disabled, and stopped afterwards. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (via ``runuser``); without that user the test is skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_BIN_DIRS = ["/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]


def _find(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for d in _BIN_DIRS:
        p = Path(d) / tool
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def _run_as() -> list[str] | None:
    """Command prefix that runs the server as a non-root user ([] when we are not root; None if impossible)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg2", reason="PostgreSQL driver not installed (pip install 'hwnas[postgres]')")
    tools = {t: _find(t) for t in ("initdb", "pg_ctl", "postgres")}
    missing = [t for t, p in tools.items() if p is None]
    if missing:
        pytest.skip(f"PostgreSQL server binaries not found: {missing} (looked on PATH and in {_BIN_DIRS})")
    prefix = _run_as()
    if prefix is None:
        pytest.skip("running as root and there is no 'postgres' user (or no runuser) to start the server as; "
                    "PostgreSQL refuses to run as root")
    tmp = Path(tempfile.mkdtemp(prefix="hwnas-pg-"))  # not under pytest's root-only tmp folder: the server user
    data, log = tmp / "data", tmp / "server.log"       # must be able to reach it
    if prefix:
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    started = False
    try:
        subprocess.run([*prefix, tools["initdb"], "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, text=True, env=env, timeout=120)
        opts = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        subprocess.run([*prefix, tools["pg_ctl"], "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60",
                        "start"], check=True, capture_output=True, text=True, env=env, timeout=120)
        started = True
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    except subprocess.CalledProcessError as e:
        server_log = log.read_text() if log.exists() else ""
        pytest.fail(f"could not start PostgreSQL: {e.cmd}\n{e.stdout}\n{e.stderr}\n{server_log[-2000:]}")
    finally:
        if started:
            subprocess.run([*prefix, tools["pg_ctl"], "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def test_two_workers_share_one_postgres_study(postgres_url: str) -> None:
    from study_helpers import assert_two_workers_share_one_study

    assert_two_workers_share_one_study(postgres_url)
