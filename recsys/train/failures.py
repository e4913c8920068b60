"""Which worker failed first, and why: each worker's report, and the driver's reading of them.

TorchDistributor says only that training failed. So each worker leaves a report under
`<run_dir>/errors/` when it fails:
- its own exception (`report_error`);
- or that the launcher stopped it (`watch_for_termination`): when one worker fails, torchrun
  sends SIGTERM to the others, and a worker blocked inside a collective would otherwise die
  silently, indistinguishable from one killed by the kernel.
A worker that leaves no report at all died outright (SIGKILL, out of memory, `os._exit`).
`explain` turns the reports into one message that names the cause, never the aftermath.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import traceback

from recsys import fsio

TERMINATED = "Terminated"  # the `kind` of a report left by a worker the launcher stopped


def _path(run_dir: str, rank: int) -> str:
    return f"{run_dir}/errors/rank-{rank}.json"


def _write(run_dir: str, rank: int, kind: str, error: str, tb: str = "") -> None:
    report = {"rank": rank, "time": time.time(), "kind": kind, "error": error, "traceback": tb}
    fsio.write_bytes(_path(run_dir, rank), json.dumps(report).encode())


def clear(run_dir: str) -> None:
    """Forget the reports of an earlier attempt (called before the workers start)."""
    fsio.delete_dir(f"{run_dir}/errors")


def report_error(run_dir: str, rank: int, exc: BaseException) -> None:
    """Leave the worker's own exception for the driver (called from its `except`)."""
    _write(run_dir, rank, type(exc).__name__, f"{type(exc).__name__}: {exc}", traceback.format_exc())


def watch_for_termination(run_dir: str, rank: int) -> None:
    """On SIGTERM, report "stopped by the launcher" and exit, even while the main thread waits
    inside a collective (where a Python signal handler would not run until it returns).

    The C-level handler writes the signal number to a wakeup socket; a daemon thread waiting
    on that socket reports and exits. Does nothing off the main thread (set_wakeup_fd needs it).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: None)  # replaces "die now"; the thread below acts

    def watch() -> None:
        _ = sender  # the wakeup socket must outlive this call: closing it loses the signal
        while signal.SIGTERM not in receiver.recv(64):
            pass
        try:  # a report of the worker's own error, if it wrote one first, is the better one
            if not fsio.exists(_path(run_dir, rank)):
                _write(run_dir, rank, TERMINATED, "stopped by the launcher (SIGTERM) after another worker failed")
        finally:
            os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="sigterm-report", daemon=True).start()


def explain(run_dir: str, num_processes: int) -> str:
    """One message naming the failure's cause, from the reports the workers left."""
    errors = f"{run_dir}/errors"
    # Only whole reports: a worker stopped while writing one leaves its temporary file behind.
    names = [n for n in fsio.listdir(errors) if n.startswith("rank-") and n.endswith(".json")]
    reports = sorted((json.loads(fsio.read_bytes(f"{errors}/{name}")) for name in names), key=lambda r: r["time"])
    raised = [r for r in reports if r.get("kind") != TERMINATED]
    stopped = len(reports) - len(raised)
    silent = sorted(set(range(num_processes)) - {r["rank"] for r in reports})
    if silent:  # died outright; what the others raised afterwards is usually a lost connection
        after = f"; then {raised[0]['error'].splitlines()[0][:200]}" if raised else ""
        return (f"training worker rank {', '.join(map(str, silent))} died without reporting an "
                f"error (killed, or out of memory?){after}")
    if not raised:
        return f"every training worker was stopped by the launcher ({stopped}) and none reported why"
    cause = raised[0]  # the first exception; later ones are usually peers losing their connection
    others = len(reports) - 1
    tail = f" (then {others} other worker(s) failed or were stopped)" if others else ""
    return f"training failed in worker rank {cause['rank']}: {cause['error']}{tail}"
