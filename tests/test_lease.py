"""One run per ds (recsys/lease.py): a second holder waits or is refused with the holder named,
a dead holder's lease is taken over, and two `recsys run` of one ds publish what one would."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from recsys.config import LeaseConfig, load_config
from recsys.errors import ConfigError, LeaseHeldError
from recsys.lease import _take_over, held, lease_path, read
from recsys.nightly import run_nightly

from conftest import CONF, make_config, write_csv

DS = "2026-11-24"
FAST = LeaseConfig(heartbeat_s=0.1, stale_after_s=1.0)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def holder(root: Path, *, until: Path | None = None, after: Path | None = None) -> subprocess.Popen:
    """A process that takes the lease of DS (once `after` exists, if given: it says `ready`
    first), prints `held` or `refused: ...`, and keeps it until `until` exists (or for ten
    minutes)."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from recsys.config import LeaseConfig
        from recsys.errors import LeaseHeldError
        from recsys.lease import held
        after, until = {str(after) if after else None!r}, {str(until) if until else None!r}
        if after:
            print("ready", flush=True)
        while after and not os.path.exists(after):
            time.sleep(0.01)
        try:
            with held({str(root)!r}, {DS!r}, "holder", LeaseConfig(heartbeat_s=0.1, stale_after_s=1.0)):
                print("held", flush=True)
                end = time.monotonic() + 600
                while time.monotonic() < end and not (until and os.path.exists(until)):
                    time.sleep(0.05)
        except LeaseHeldError as exc:
            print("refused:", exc, flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)


def leases(root: Path) -> list[str]:
    return sorted(os.listdir(root / "leases"))


def test_a_second_holder_is_refused_with_the_holder_named_and_other_days_are_free(tmp_path):
    with held(str(tmp_path), DS, "run", FAST) as path:
        assert path == str(tmp_path / "leases" / f"{DS}.lease")
        with pytest.raises(LeaseHeldError) as err:
            with held(str(tmp_path), DS, "score", FAST):
                pass
        message = str(err.value)
        assert message.startswith(f"ds {DS} is taken by another run: recsys run, pid {os.getpid()} "
                                  f"on {socket.gethostname()}, since ")
        assert f"lease {path}" in message and "lease.wait_s" in message
        with held(str(tmp_path), "2026-11-25", "run", FAST) as other:
            assert leases(tmp_path) == [f"{DS}.lease", "2026-11-25.lease"]
            assert read(other)[0]["ds"] == "2026-11-25"
    assert leases(tmp_path) == []


def test_a_waiting_run_takes_the_lease_once_the_holder_releases_it(tmp_path):
    done = tmp_path / "done"
    proc = holder(tmp_path, until=done)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeldError, match=rf"pid {proc.pid} .*still held after waiting 0.3s \(lease.wait_s\)"):
        with held(str(tmp_path), DS, "run", LeaseConfig(wait_s=0.3, heartbeat_s=0.1, stale_after_s=1.0)):
            pass
    threading.Timer(1.0, done.touch).start()
    started = time.monotonic()
    with held(str(tmp_path), DS, "run", LeaseConfig(wait_s=30, heartbeat_s=0.1, stale_after_s=1.0)) as path:
        assert time.monotonic() - started >= 0.9
        assert read(path)[0]["pid"] == os.getpid()
    assert proc.wait(timeout=30) == 0


def test_the_heartbeat_advances_and_keeps_another_machines_lease_alive(tmp_path):
    with held(str(tmp_path), DS, "run", FAST) as path:
        os.utime(path, (1, 1))  # as if the last beat were long ago
        time.sleep(0.5)
        assert time.time() - read(path)[1] < 0.5
    # A lease from another machine: its pid means nothing here, only its heartbeat counts.
    path = Path(lease_path(str(tmp_path), DS))
    path.write_text(json.dumps({"owner": "x", "pid": 1, "host": "elsewhere", "machine": "elsewhere",
                                "step": "run", "ds": DS, "started_at": "2026-11-24T02:30:00Z"}))
    with pytest.raises(LeaseHeldError, match="pid 1 on elsewhere"):
        with held(str(tmp_path), DS, "run", FAST):
            pass
    os.utime(path, (time.time() - 5, time.time() - 5))  # older than stale_after_s: dead
    with held(str(tmp_path), DS, "run", FAST):
        assert read(str(path))[0]["host"] == socket.gethostname()


@pytest.mark.parametrize("override, message", [
    ("lease.wait_s=-1", "lease.wait_s must be at least 0"),
    ("lease.heartbeat_s=0", "lease.heartbeat_s must be positive"),
    ("lease.stale_after_s=45", "lease.stale_after_s must be at least twice lease.heartbeat_s"),
    ("lease.wait=5", "unknown config key lease.wait "),
])
def test_bad_lease_settings_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONF / "default.yaml", ["input.path=x", override])
    assert message in str(err.value)


def test_release_removes_only_its_own_lease(tmp_path, caplog):
    done = tmp_path / "done"
    with caplog.at_level(logging.WARNING, logger="recsys.lease"):
        with held(str(tmp_path), DS, "run", FAST) as path:
            os.rename(path, tmp_path / "moved")  # as a take-over would, had this run looked dead
            proc = holder(tmp_path, until=done)
            assert proc.stdout.readline().strip() == "held"
    assert read(path)[0]["pid"] == proc.pid
    assert f"lease {path} no longer names this run" in caplog.text
    done.touch()
    assert proc.wait(timeout=30) == 0
    assert leases(tmp_path) == []


def test_a_killed_holders_lease_is_taken_over(tmp_path, caplog):
    proc = holder(tmp_path)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeldError, match=f"recsys holder, pid {proc.pid} "):
        with held(str(tmp_path), DS, "run", FAST):
            pass
    os.kill(proc.pid, signal.SIGKILL)  # and not reaped yet: a zombie is dead too
    # On the holder's own machine its pid decides, long before stale_after_s.
    patient = LeaseConfig(wait_s=10, heartbeat_s=0.1, stale_after_s=600)
    with caplog.at_level(logging.WARNING, logger="recsys.lease"):
        with held(str(tmp_path), DS, "run", patient) as path:
            assert read(path)[0]["pid"] == os.getpid()
    assert f"taking over the lease of a dead run: recsys holder, pid {proc.pid} " in caplog.text
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert leases(tmp_path) == []


def test_of_several_takers_of_a_dead_lease_one_wins(tmp_path):
    dead = holder(tmp_path)
    assert dead.stdout.readline().strip() == "held"
    dead.kill()
    dead.wait(timeout=30)
    go, done = tmp_path / "go", tmp_path / "done"
    takers = [holder(tmp_path, after=go, until=done) for _ in range(4)]
    assert [p.stdout.readline().strip() for p in takers] == ["ready"] * 4
    go.touch()
    said = [p.stdout.readline().strip() for p in takers]
    done.touch()
    assert [p.wait(timeout=30) for p in takers] == [0] * 4
    assert said.count("held") == 1, said
    winner = takers[said.index("held")].pid
    assert all(re.search(rf"pid ({winner}|{dead.pid}) ", s) for s in said if s != "held"), said
    assert leases(tmp_path) == []


def test_a_late_taker_removes_only_the_dead_lease_it_saw(tmp_path):
    """Two contenders judge one lease dead; the first takes over; the second, acting on what it
    saw, must leave the new holder's lease. One take-over at a time, under a guard file."""
    dead = holder(tmp_path)
    assert dead.stdout.readline().strip() == "held"
    dead.kill()
    dead.wait(timeout=30)
    path = lease_path(str(tmp_path), DS)
    seen = read(path)[0]["owner"]
    guard = Path(f"{path}.takeover")
    guard.touch()  # another contender is taking over
    assert not _take_over(path, seen) and read(path)[0]["owner"] == seen
    os.utime(guard, (time.time() - 60, time.time() - 60))  # ... or died doing it
    assert not _take_over(path, seen) and not guard.exists()
    with held(str(tmp_path), DS, "run", FAST):  # the first contender
        assert not _take_over(path, seen)  # the late one
        assert read(path)[0]["pid"] == os.getpid()
    assert leases(tmp_path) == []


# `recsys run` on a toy log: 16 users, EASE (no workers to launch), no ALS baseline.
ROWS = [f"u{u},i{(u // 8) * 10 + (u + j) % 10},{1000 + 10 * j + u}" for u in range(16) for j in range(7)]
SETTINGS = ["input.format=csv", "dataset=toy", "prepare.min_user_interactions=1",
            "prepare.min_item_interactions=1", "prepare.split.method=leave_last",
            "prepare.split.valid_n=1", "prepare.min_row_groups=2", "train.model=ease",
            "train.ease_lambdas=[1.0]", "train.per_model={}", "evaluate.ks=[5]",
            "evaluate.als.enabled=false", "score.top_n=3", "score.gate.enabled=false"]


@pytest.mark.slow
def test_two_runs_of_one_ds_started_together_publish_what_one_run_does(spark, tmp_path):
    from pyspark.testing import assertDataFrameEqual
    log = write_csv(tmp_path / "log.csv", "user_id,item_id,ts", ROWS)
    settings = [f"input.path={log}", *SETTINGS]
    root = tmp_path / "root"

    def recsys_run(name: str, wait_s: int) -> subprocess.Popen:
        sets = [*settings, f"paths.root={root}", "score.table=test.lease", f"lease.wait_s={wait_s}",
                "spark.master=local[1]", "spark.driver_memory=1g", "spark.shuffle_partitions=2",
                "spark.conf.spark.ui.enabled=false"]
        args = [str(Path(sys.executable).with_name("recsys")), "run", "--conf", str(CONF / "default.yaml"),
                "--ds", DS, *[a for s in sets for a in ("--set", s)]]
        return subprocess.Popen(args, cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL,
                                stdout=open(tmp_path / f"{name}.out", "w"),
                                stderr=open(tmp_path / f"{name}.err", "w"))

    def output(name: str) -> tuple[str, str]:
        return (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()

    runs = {"a": recsys_run("a", 0), "b": recsys_run("b", 0)}
    lease = root / "leases" / f"{DS}.lease"
    deadline = time.monotonic() + 120
    while not lease.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    runs["c"] = recsys_run("c", 600)  # comes while the ds is taken: waits, then finds it done
    # Meanwhile one run alone, in this process, on a root of its own: what the table should hold.
    run_nightly(spark, make_config(tmp_path / "single", *settings, "score.table=test.lease_single"), DS)
    codes = {name: proc.wait(timeout=600) for name, proc in runs.items()}

    assert sorted([codes["a"], codes["b"]]) == [0, 2], {n: output(n)[1][-3000:] for n in runs}
    winner, loser = ("a", "b") if codes["a"] == 0 else ("b", "a")
    out, err = output(loser)
    assert (f"recsys run: error: ds {DS} is taken by another run: recsys run, pid {runs[winner].pid} "
            f"on {socket.gethostname()}, since ") in err
    assert f"lease {lease}; set lease.wait_s" in err
    assert json.loads(out.splitlines()[-1])["status"] == "failed"
    assert json.loads(output(winner)[0].splitlines()[-1])["status"] == "completed"
    out, err = output("c")
    assert codes["c"] == 0, err[-3000:]
    assert f"waiting up to 600s for ds {DS}: recsys run, pid {runs[winner].pid} " in err
    assert set(json.loads(out.splitlines()[-1])["counts"].values()) == {"skipped"}
    assert not lease.exists()

    published = json.loads((root / "runs" / DS / "score.json").read_text())["outputs"]["location"]
    assert len(os.listdir(root / "warehouse" / "test.db" / "lease" / "_versions" / f"ds={DS}")) == 1
    columns = ["user_id", "item_id", "rank", "score", "source"]
    single = spark.table("test.lease_single").where(f"ds = '{DS}'").select(columns)
    assert single.count() == 16 * 3
    assertDataFrameEqual(spark.read.parquet(published).select(columns), single, rtol=1e-5)
