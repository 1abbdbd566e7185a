"""Entry point of a measuring process: ``python -c 'from latency_tables._worker import main; main()' RFD WFD ...``.

Started by `latency_tables.protocol.WorkerPool` with `subprocess` (not multiprocessing's spawn, which re-runs the
caller's ``__main__`` and breaks scripts without a main guard). It talks over two inherited pipe file descriptors
using `multiprocessing.connection.Connection` (messages pickled between these two trusted processes only) and
answers ``(command, kwargs)`` with ``("ok", result)`` or ``("error", traceback)`` until it receives ``None``.
"""

from __future__ import annotations

import json
import sys
import traceback
from multiprocessing.connection import Connection


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    rfd, wfd, backend_name, kwargs_json = int(args[0]), int(args[1]), args[2], args[3]
    recv = Connection(rfd, writable=False)
    send = Connection(wfd, readable=False)
    try:
        from latency_tables.backends import create_backend
        from latency_tables.protocol import RoundWorker

        worker = RoundWorker(create_backend(backend_name, **json.loads(kwargs_json)))
        send.send(("ok", None))
    except BaseException:  # noqa: BLE001 - any failure goes back to the parent, which raises it with this traceback
        send.send(("error", traceback.format_exc()))
        return
    for msg in iter(recv.recv, None):
        command, kwargs = msg
        try:
            send.send(("ok", getattr(worker, command)(**kwargs)))
        except BaseException:  # noqa: BLE001 - as above: reported to the parent, the worker keeps serving
            send.send(("error", traceback.format_exc()))
