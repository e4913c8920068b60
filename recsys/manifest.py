"""Run manifests: what a job read, wrote, counted and how long it took, in `<root>/runs/<ds>/<step>.json`."""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Callable, Iterator

log = logging.getLogger("recsys")
VERSIONED = ("recsys", "pyspark", "pyarrow", "petastorm", "torch", "numpy", "pandas")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


class Manifest:
    """Collects one job's record; `summary()` is the JSON line the job prints last."""

    def __init__(self, step: str, ds: str, config: dict[str, Any]):
        self.data: dict[str, Any] = {
            "step": step, "ds": ds, "status": "running",
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": {}, "outputs": {}, "counts": {}, "timings_s": {},
            "versions": versions(), "config": config,
        }
        self._t0 = time.perf_counter()

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def elapsed(self) -> float:
        """Seconds since the job started."""
        return time.perf_counter() - self._t0

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        log.info("%s: %s ...", self.data["step"], stage)
        try:
            yield
        finally:
            took = round(time.perf_counter() - t, 3)
            self.data["timings_s"][stage] = took
            log.info("%s: %s took %.1fs", self.data["step"], stage, took)

    @contextmanager
    def recorded(self, write: Callable[[dict[str, Any]], None]) -> Iterator["Manifest"]:
        """Run a job's body: `completed` if it returns, `failed` with the error if it raises,
        and the manifest written by `write` either way."""
        try:
            yield self
            self.finish()
        except BaseException as exc:
            self.finish("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            write(self.data)

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        self.data["status"] = status
        if error:
            self.data["error"] = error
        self.data["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.data["timings_s"]["total"] = round(self.elapsed(), 3)

    def summary(self) -> dict[str, Any]:
        keep = ("step", "ds", "status", "error", "outputs", "counts", "metrics")
        out = {k: self.data[k] for k in keep if k in self.data}
        out["seconds"] = self.data["timings_s"].get("total")
        return out


def print_summary(manifest: Manifest) -> None:
    """The last line a job prints: one JSON object, for schedulers and humans alike."""
    sys.stdout.flush()
    print(json.dumps(manifest.summary(), sort_keys=True, default=str), flush=True)
