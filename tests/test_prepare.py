"""The prepare job end to end: exact accounting, quarantine, atomic publish, MovieLens."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys import schema as S
from recsys.errors import MissingColumnError, RejectShareError
from recsys.prep.pipeline import prepare
from recsys.snapshot import snapshot_path
from recsys.synth import SynthSpec, generate

from conftest import CONF, NOW, REPO, make_config, write_csv

DS = "2026-11-24"
HEADER = "user_id,item_id,ts,event,value"
GOOD = [
    "u1,a,1000,view,", "u1,a,1000,view,",            # an exact copy
    "u1,a,2000,buy,", "u1,b,3000,view,", "u1,c,4000,view,4",
    "u2,a,1100,view,", "u2,b,2100,view,", "u2,c,3100,view,", "u2,d,5000,view,",  # d: one user
    "u3,a,1200,view,", "u3,b,2200,view,",
    "u4,a,1300,view,",                                # u4: one item
    *[f"bot,{i},{t},view," for i, t in zip("abcabc", range(10, 70, 10))],  # 6 events in a day
]
BAD = {
    S.MISSING_USER: ",a,1000,view,", S.MISSING_ITEM: "u1,,1000,view,",
    S.BAD_TIMESTAMP: "u1,a,notatime,view,", S.FUTURE_TIMESTAMP: "u1,a,4102444800,view,",
    S.UNKNOWN_EVENT: "u1,a,1000,teleport,", S.BAD_VALUE: "u1,a,1000,view,abc",
    S.VALUE_OUT_OF_RANGE: "u1,a,1000,view,9", S.MALFORMED_LINE: "%%% not a csv line",
}
SETTINGS = ["input.format=csv", "input.columns.event=event", "input.columns.value=value",
            "input.ts_format=unix", "prepare.event_weights={view: 1.0, buy: 3.0}",
            "prepare.value_range=[1, 5]", "prepare.max_events_per_user_day=5",
            "prepare.min_user_interactions=2", "prepare.min_item_interactions=2",
            "prepare.split.method=leave_last", "prepare.split.valid_n=1",
            "prepare.max_reject_share=0.5", "prepare.min_row_groups=2", "dataset=toy"]


@pytest.fixture()
def toy(tmp_path):
    log = write_csv(tmp_path / "log" / "events.csv", HEADER, GOOD + list(BAD.values()))
    users = write_csv(tmp_path / "users.csv", "user_id,age,gender", ["u1,30,F", "u2,,M", "u9,50,F"])
    cfg = make_config(tmp_path / "root", *SETTINGS, f"input.path={log.parent}",
                      f"users={{path: {users}, format: csv, key: user_id, "
                      "categorical: [gender], buckets: {age: [25, 40]}}")
    return cfg


def read(spark, cfg, name):
    return spark.read.parquet(f"{snapshot_path(cfg.paths.root, cfg.dataset, DS)}/{name}")


def test_every_row_is_accounted_for(spark, toy):
    counts = prepare(spark, toy, DS, now=NOW)["counts"]
    assert counts["input_rows"] == 26
    assert counts["rejected_by_reason"] == {reason: 1 for reason in BAD}
    assert counts["deduplicated_detail"] == {"exact_copies": 1, "merged_repeat_events": 1}
    assert counts["filtered_detail"] == {"abuse": 6, "kcore": 2, "valid_unknown_user_or_item": 2,
                                         "below_threshold_unknown_user_or_item": 0}
    assert counts["kept"] == 6 and counts["rows"]["train"] == 5 and counts["rows"]["valid"] == 1
    assert counts["kept"] + counts["rejected"] + counts["deduplicated"] + counts["filtered"] == 26
    assert counts["balanced"]


def test_outputs_follow_the_contract(spark, toy):
    prepare(spark, toy, DS, now=NOW)
    users = {r.user_id: r.user_idx for r in read(spark, toy, S.USER_INDEX).collect()}
    items = {r.item_id: r.item_idx for r in read(spark, toy, S.ITEM_INDEX).collect()}
    assert users == {"u1": 0, "u2": 1, "u3": 2, "u9": 3}  # history first, then side-table only
    train = read(spark, toy, S.TRAIN)
    assert dict(train.dtypes) == {"user_idx": "int", "item_idx": "int", "ts": "timestamp",
                                  "weight": "float", "recency": "int", "value": "float"}
    inv_u, inv_i = {v: k for k, v in users.items()}, {v: k for k, v in items.items()}
    got = {(inv_u[r.user_idx], inv_i[r.item_idx]): r.weight for r in train.collect()}
    assert got == {("u1", "a"): 4.0, ("u1", "b"): 1.0, ("u2", "a"): 1.0, ("u2", "b"): 1.0,
                   ("u3", "a"): 1.0}
    valid = [(inv_u[r.user_idx], inv_i[r.item_idx]) for r in read(spark, toy, S.VALID).collect()]
    assert valid == [("u3", "b")]
    rejects = {r.reason: r.raw for r in read(spark, toy, S.REJECTS).collect()}
    assert set(rejects) == set(BAD) and rejects[S.MALFORMED_LINE] == BAD[S.MALFORMED_LINE]
    feats = {r.user_idx: r for r in read(spark, toy, S.USERS).collect()}
    assert feats[3].n_train == 0 and feats[3].gender == 1 and feats[3].age_bucket == 3  # u9: F, 50
    assert feats[1].age_bucket == 0 and feats[1].gender == 2 and feats[0].n_train == 2
    assert {r.item_idx: r.popularity for r in read(spark, toy, S.ITEMS).collect()} == \
        {items["a"]: 3, items["b"]: 2, items["c"]: 0}  # c is only in (dropped) validation
    snap = Path(snapshot_path(toy.paths.root, toy.dataset, DS))
    assert json.loads((snap / S.COMPLETE_MARKER).read_text())["rows"]["train"] == 5
    meta = json.loads((snap / S.USERS / S.FEATURES_META).read_text())
    assert meta["categorical"]["gender"] == {"cardinality": 3, "vocab": ["F", "M"]}
    manifest = json.loads((Path(toy.paths.root) / "runs" / DS / "prepare.json").read_text())
    assert manifest["status"] == "completed" and manifest["versions"]["pyspark"].startswith("3.5")


def test_missing_column_is_named(spark, toy):
    toy.input.columns.event = "event_type"
    with pytest.raises(MissingColumnError, match="'event_type' .*input.columns.event"):
        prepare(spark, toy, DS, now=NOW)


def test_too_many_rejects_fail_and_leave_the_previous_snapshot(spark, toy):
    prepare(spark, toy, DS, now=NOW)
    snap = Path(snapshot_path(toy.paths.root, toy.dataset, DS))
    before = {p: p.stat().st_mtime_ns for p in snap.rglob("*")}
    toy.prepare.max_reject_share = 0.05
    with pytest.raises(RejectShareError, match=r"rejected 8 of 26 rows .* nothing was published"):
        prepare(spark, toy, DS, now=NOW)
    assert {p: p.stat().st_mtime_ns for p in snap.rglob("*")} == before
    manifest = json.loads((Path(toy.paths.root) / "runs" / DS / "prepare.json").read_text())
    assert manifest["status"] == "failed" and "max_reject_share" in manifest["error"]
    assert not list((snap.parent / "_staging").iterdir())


def test_rerun_replaces_the_snapshot_and_clears_leftovers(spark, toy):
    prepare(spark, toy, DS, now=NOW)
    snap = Path(snapshot_path(toy.paths.root, toy.dataset, DS))
    leftover = snap.parent / "_staging" / f"ds={DS}-crashed" / S.TRAIN
    leftover.mkdir(parents=True)
    (leftover / "part-0.parquet").write_text("half-written")
    toy.prepare.split.method = "random"
    toy.prepare.split.valid_fraction = 0.5
    counts = prepare(spark, toy, DS, now=NOW)["counts"]
    assert read(spark, toy, S.TRAIN).count() == counts["rows"]["train"]
    assert sorted(p.name for p in snap.parent.iterdir()) == ["_staging", f"ds={DS}"]
    assert not list((snap.parent / "_staging").iterdir())


def test_movielens_end_to_end(spark, tmp_path):
    # The temporal split (the shipped config splits per user: leave_last).
    cfg = make_config(tmp_path, "prepare.split.method=temporal", conf="movielens.yaml")
    counts = prepare(spark, cfg, DS, now=NOW)["counts"]
    assert counts["input_rows"] == 100_000 and counts["rejected"] == 0 and counts["balanced"]
    assert counts["rows"]["users"] == 943 and counts["rows"]["items"] == 1682
    train, valid = read(spark, cfg, S.TRAIN), read(spark, cfg, S.VALID)
    assert train.count() + valid.count() == counts["kept"]
    assert valid.agg(F.min(S.TS)).first()[0] > train.agg(F.max(S.TS)).first()[0]
    assert train.join(valid, [S.USER_IDX, S.ITEM_IDX]).count() == 0
    assert len(train.inputFiles()) >= cfg.prepare.min_row_groups  # one row group per file
    items = read(spark, cfg, S.ITEMS)
    first = items.where(F.col(S.ITEM_IDX) == 0).first()  # the first movie: Toy Story (1995)
    assert len(first["genres"]) == 8 and len(first["title"]) == 16  # fixed lengths, padded with 0
    assert sum(g > 0 for g in first["genres"]) == 3 and sum(t > 0 for t in first["title"]) == 3  # toy story 1995
    assert items.where(F.col("release_date_age_days").isNull()).count() <= 2  # a few lack a date


def test_synthetic_corruption_lands_in_rejects_with_its_reason(spark, tmp_path):
    truth = generate(SynthSpec(events=20_000, seed=3), str(tmp_path / "log"))
    cfg = make_config(tmp_path / "root", f"input.path={tmp_path / 'log'}", conf="synth.yaml")
    counts = prepare(spark, cfg, DS, now=NOW)["counts"]
    assert counts["input_rows"] == truth["rows"]
    assert counts["rejected_by_reason"] == truth["corrupt"]
    assert counts["deduplicated_detail"]["exact_copies"] >= truth["duplicates"]
    assert counts["balanced"]


def run_job(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "jobs" / "prepare.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_job_entry_point_prints_its_summary_last(tmp_path):
    log = write_csv(tmp_path / "log.csv", HEADER, GOOD)
    common = ["--conf", str(CONF / "default.yaml"), "--ds", DS, "--set", f"paths.root={tmp_path}",
              "--set", f"input.path={log}", "--set", "spark.master=local[1]",
              *[a for s in SETTINGS for a in ("--set", s)]]
    ok = run_job(*common)
    assert ok.returncode == 0, ok.stderr[-2000:]
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["counts"]["input_rows"] == len(GOOD)
    bad = run_job(*common, "--set", "input.columns.user=customer")
    assert bad.returncode == 2
    assert "recsys prepare: error: interaction log: column 'customer'" in bad.stderr
    assert json.loads(bad.stdout.strip().splitlines()[-1])["status"] == "failed"
