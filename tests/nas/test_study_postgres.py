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
import sys
import tempfile
import textwrap
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
                           capture_output=True, text=True, env=env, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


_WORKER = textwrap.dedent(
    """
    import sys
    from nas.search import search
    from nas.synthetic import make_synthetic_objective
    storage, seed, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    obj = make_synthetic_objective("mnist")
    search(obj.space, obj, strategy="optuna-tpe", budget=budget, seed=seed, storage=storage, study_name="shared",
           n_startup_trials=4)
    print(obj.n_measured)
    """
)


def test_two_workers_share_one_postgres_study(postgres_url: str) -> None:
    import optuna
    from optuna.trial import TrialState

    from nas.search import search
    from nas.study import open_storage
    from nas.synthetic import make_synthetic_objective

    budget = 16
    obj = make_synthetic_objective("mnist")  # create the study first so the workers do not race on its creation
    search(obj.space, obj, strategy="optuna-tpe", budget=1, seed=99, storage=postgres_url, study_name="shared")
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, postgres_url, str(seed), str(budget)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    measured = [int(out.strip().splitlines()[-1]) for out, _ in outs]
    study = optuna.load_study(study_name="shared", storage=open_storage(postgres_url))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert not study.get_trials(states=(TrialState.RUNNING,)), "no trial may be left running"
    counted = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
               if not (t.user_attrs.get("duplicate") or t.user_attrs.get("surplus"))]
    assert len(counted) == budget, "exactly the budget: nothing lost, nothing extra"
    archs = [t.user_attrs["arch"] for t in counted]
    assert len(set(archs)) == budget, "no architecture evaluated twice"
    assert sum(measured) == budget - 1, "each counted trial measured by exactly one worker"
