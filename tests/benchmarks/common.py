"""What the benchmarks share: the machine they ran on, and a job run as a user runs it.

The benchmarks are `make bench-*` targets, not tests: pytest does not collect this folder's
`bench_*.py` files.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class JobFailed(RuntimeError):
    pass


def machine() -> dict:
    with open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": model, "python": platform.python_version()}


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its children (the JVM, Python workers)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_job(cmd: list[str], log_base: str) -> dict:
    """Run a recsys command; wall seconds, peak RSS of its process tree and its last-line JSON
    summary. Raises JobFailed (naming the log) if it exits non-zero or reports a failure."""
    with open(log_base + ".out", "w") as out, open(log_base + ".err", "w") as err:
        t = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err)
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            peak = max(peak, tree_rss(proc))
            time.sleep(0.2)
        wall = time.perf_counter() - t
    with open(log_base + ".out") as f:
        lines = f.read().strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if child.returncode != 0 or summary.get("status") not in (None, "completed"):
        raise JobFailed(f"exit {child.returncode}: {summary.get('error') or 'no summary'}; "
                        f"see {log_base}.err")
    return {"wall_s": round(wall, 2), "peak_rss_gb": round(peak / 2**30, 2), "summary": summary}
