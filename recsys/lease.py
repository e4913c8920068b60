"""One run per ds: the lease `<root>/leases/<ds>.lease` that every job holds while it works.

Two runs of one ds (an Airflow retry beside a manual backfill) would otherwise write the same
snapshot, artifacts and partition at once. `held` takes the lease before Spark starts; a second
run waits up to `lease.wait_s`, then refuses with `LeaseHeldError` naming the holder.

- Taking it is one atomic, exclusive step: the holder's record (owner, pid, host, step, ds,
  started_at) is written to a private file, then hard-linked to the lease path. `link` fails
  when the path exists, so of several takers one wins, and no reader sees a half-written lease.
- The heartbeat is the file's modification time, touched every `lease.heartbeat_s` through the
  holder's own open descriptor: a holder whose lease was taken over touches only its old file,
  never the new holder's.
- The holder is dead when, on its own machine (same host, boot and pid namespace), its pid is
  gone or is now another process; from another machine, when its heartbeat is older than
  `lease.stale_after_s`. A dead holder's lease is taken over (with a warning naming it) under a
  short guard file, and only if it still names that holder, so one contender wins.
- Release removes the lease only if it still names this holder.

Only a local root (a path, or file://, shared or not) gets a lease: the exclusive create needs
POSIX `link`, which pyarrow's filesystems lack and Hadoop's are not reachable before Spark
starts. For hdfs://, s3a:// and the like the job warns and runs without one; one run per ds then
rests on the scheduler (the DAG's `max_active_runs=1`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

from recsys.config import LeaseConfig
from recsys.errors import LeaseHeldError
from recsys.storage import is_local, join, local_path, resolve_root

log = logging.getLogger("recsys.lease")
GUARD_STALE_S = 30.0  # a take-over lasts milliseconds: a guard this old was left by a crash


def lease_path(root: str, ds: str) -> str:
    return join(local_path(resolve_root(root)), "leases", f"{ds}.lease")


@contextlib.contextmanager
def held(root: str, ds: str, step: str, cfg: LeaseConfig) -> Iterator[str | None]:
    """Hold the lease of `ds` under `root` for the block; yields its path (None: a root that
    cannot have one, see above). Not re-entrant: a second `held` of the same ds waits or
    refuses, even in the same process."""
    root = resolve_root(root)
    if not is_local(root):
        log.warning("no lease for ds %s: paths.root %s is not a local path or file:// URI, and "
                    "only those have an atomic exclusive create; one run per ds is up to the "
                    "scheduler", ds, root)
        yield None
        return
    path = lease_path(root, ds)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    me = {"owner": uuid.uuid4().hex, "pid": os.getpid(), "host": socket.gethostname(),
          "machine": _machine(), "pid_start": _pid_start(os.getpid()), "step": step, "ds": ds,
          "started_at": _iso(time.time()), "heartbeat_s": cfg.heartbeat_s}
    fd = _acquire(path, me, cfg)
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(fd, cfg.heartbeat_s, stop), daemon=True,
                            name=f"lease-{ds}")
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        beat.join()
        if not _remove_if(path, me["owner"]):
            log.warning("lease %s no longer names this run (taken over as stale?): left as it is", path)
        os.close(fd)


def read(path: str) -> tuple[dict[str, Any], float] | None:
    """(the holder's record, its last heartbeat as a Unix time), None when there is no lease."""
    try:
        with open(path) as fh:
            beat = os.fstat(fh.fileno()).st_mtime
            text = fh.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text), beat
    except ValueError:  # not written by `held`: judged by its age alone
        return {}, beat


def _acquire(path: str, me: dict[str, Any], cfg: LeaseConfig) -> int:
    started = time.monotonic()
    deadline = started + cfg.wait_s
    waiting = False
    while True:
        fd = _create(path, me)
        if fd is not None:
            if waiting:
                log.info("took the lease of ds %s after waiting %.0fs", me["ds"], time.monotonic() - started)
            return fd
        seen = read(path)
        if seen is None:  # released meanwhile
            continue
        info, beat = seen
        if _dead(info, beat, cfg.stale_after_s) and _take_over(path, info.get("owner")):
            log.warning("taking over the lease of a dead run: %s", describe(path, info, beat))
            continue
        if time.monotonic() >= deadline:
            how = (f"still held after waiting {cfg.wait_s:g}s (lease.wait_s)" if cfg.wait_s
                   else "set lease.wait_s (e.g. --set lease.wait_s=3600) to wait for it")
            raise LeaseHeldError(f"ds {me['ds']} is taken by another run: "
                                 f"{describe(path, info, beat)}; {how}")
        if not waiting:
            log.info("waiting up to %gs for ds %s: %s", cfg.wait_s, me["ds"], describe(path, info, beat))
            waiting = True
        time.sleep(min(1.0, cfg.heartbeat_s, max(0.01, deadline - time.monotonic())))


def describe(path: str, info: dict[str, Any], beat: float) -> str:
    """The holder in one line, for a refusal or a take-over warning."""
    who = (f"recsys {info.get('step')}, pid {info.get('pid')} on {info.get('host')}, "
           f"since {info.get('started_at')}" if info else "an unreadable lease")
    return f"{who}, last heartbeat {_iso(beat)} ({time.time() - beat:.0f}s ago); lease {path}"


def _create(path: str, me: dict[str, Any]) -> int | None:
    """The open descriptor of our new lease, or None when the path is taken."""
    tmp = f"{path}.{me['owner']}"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, json.dumps(me, indent=1).encode())
        os.fsync(fd)
        os.link(tmp, path)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, FileExistsError):
            return None
        raise
    finally:
        os.unlink(tmp)
    return fd


def _beat(fd: int, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            os.utime(fd)
        except OSError as exc:  # the next beat may succeed; a missed one only ages the lease
            log.warning("lease heartbeat failed: %s", exc)


def _dead(info: dict[str, Any], beat: float, stale_after_s: float) -> bool:
    if info.get("machine") == _machine():
        return _pid_start(int(info["pid"])) != info.get("pid_start")
    return time.time() - beat > stale_after_s


def _take_over(path: str, owner: str | None) -> bool:
    """Remove the dead `owner`'s lease; one contender at a time, under a guard file."""
    guard = f"{path}.takeover"
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - os.stat(guard).st_mtime > GUARD_STALE_S:
                os.unlink(guard)
        return False
    try:
        return _remove_if(path, owner)
    finally:
        os.unlink(guard)


def _remove_if(path: str, owner: str | None) -> bool:
    """Delete the lease if it names `owner`. It is moved aside and checked there, and put back
    if it turns out to be another's (released and taken again between the two looks)."""
    seen = read(path)
    if seen is None or seen[0].get("owner") != owner:
        return False
    aside = f"{path}.{uuid.uuid4().hex}.removed"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        moved = read(aside)
        if moved is not None and moved[0].get("owner") == owner:
            return True
        try:
            os.link(aside, path)
        except FileExistsError:
            log.error("lease %s: moved another run's lease aside and could not put it back", path)
        return False
    finally:
        os.unlink(aside)


def _machine() -> str:
    """Where a pid names the same process: the host, its boot and the pid namespace."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as fh:
            parts.append(fh.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _pid_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), so a reused pid is not taken for the
    holder; None when no such process runs (a zombie is dead). Without /proc: "?" if it exists."""
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return None if fields[0] in ("Z", "X") else fields[19]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
