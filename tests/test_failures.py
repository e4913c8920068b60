"""A failed training names its cause: the worker that raised, or the one that died, never a
worker the launcher stopped afterwards."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

from recsys.train import failures

# A worker joins a 2-process Gloo group whose other member never comes: it waits inside
# torch's C++ rendezvous, where a Python signal handler cannot run, as a worker waiting on a
# failed peer's collective does.
BLOCKED_WORKER = textwrap.dedent("""
    import sys, torch.distributed as dist
    from recsys.train import failures
    run_dir, store = sys.argv[1], sys.argv[2]
    failures.watch_for_termination(run_dir, 0)
    print("waiting", flush=True)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=2)
""")


def _stop_blocked_worker(run_dir, store) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED_WORKER, str(run_dir), str(store)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(1.0)  # inside the rendezvous by now
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM


def test_a_worker_stopped_after_reporting_its_own_error_keeps_that_report(tmp_path):
    run_dir = tmp_path / "run"
    _report(run_dir, 0, "RuntimeError", "RuntimeError: Connection reset by peer", at=10.0)
    _stop_blocked_worker(run_dir, tmp_path / "store")
    assert json.loads((run_dir / "errors" / "rank-0.json").read_text())["kind"] == "RuntimeError"


def test_a_worker_stopped_inside_a_collective_reports_that_the_launcher_stopped_it(tmp_path):
    run_dir = tmp_path / "run"
    _stop_blocked_worker(run_dir, tmp_path / "store")
    report = json.loads((run_dir / "errors" / "rank-0.json").read_text())
    assert report["kind"] == failures.TERMINATED and report["rank"] == 0


def _report(run_dir, rank, kind, error, at):
    path = run_dir / "errors" / f"rank-{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rank": rank, "time": at, "kind": kind, "error": error}))


def test_the_cause_is_the_worker_that_raised_not_the_one_stopped_after_it(tmp_path):
    _report(tmp_path, 1, "RuntimeError", "RuntimeError: bad batch", at=10.0)
    _report(tmp_path, 0, failures.TERMINATED, "stopped by the launcher", at=11.0)
    message = failures.explain(str(tmp_path), 2)
    assert message.startswith("training failed in worker rank 1: RuntimeError: bad batch")


def test_a_worker_that_left_no_report_is_named_as_having_died(tmp_path):
    _report(tmp_path, 0, failures.TERMINATED, "stopped by the launcher", at=11.0)
    (tmp_path / "errors" / "rank-0.json.tmp-5e1f").write_bytes(b"")  # a write cut short by a stop
    assert failures.explain(str(tmp_path), 2).startswith("training worker rank 1 died without reporting")
    _report(tmp_path, 0, "DistBackendError", "DistBackendError: Connection closed by peer", at=12.0)
    message = failures.explain(str(tmp_path), 2)
    assert "rank 1 died" in message and "then DistBackendError: Connection closed by peer" in message
