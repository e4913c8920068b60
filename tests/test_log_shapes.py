"""Logs as teams export them: no timestamp column, play counts as confidence, explicit ratings
with a threshold. MovieLens-100k with its time column dropped, prepared, trained and scored."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys import schema as S
from recsys.config import PACKAGE_DATA
from recsys.errors import ConfigError, SnapshotError
from recsys.prep.pipeline import prepare
from recsys.score.job import score
from recsys.snapshot import open_snapshot, snapshot_path
from recsys.train.job import check_recency, train_model

from conftest import NOW, make_config, write_csv

DS = "2026-11-24"
NO_TIME = ["input.columns.ts=null", "prepare.split.method=random"]


@pytest.fixture(scope="module")
def ml100k_without_time(tmp_path_factory) -> Path:
    """u.data with its timestamp column dropped (user, item, rating), as a CSV with a header."""
    d = tmp_path_factory.mktemp("no-time")
    ratings = pd.read_csv(PACKAGE_DATA / "ml-100k" / "u.data", sep="\t",
                          names=["user_id", "item_id", "rating", "timestamp"])
    path = d / "log" / "ratings.csv"
    path.parent.mkdir()
    ratings.drop(columns="timestamp").to_csv(path, index=False)
    return path


def snap_dir(cfg) -> Path:
    return Path(snapshot_path(cfg.paths.root, cfg.dataset, DS))


def test_rating_threshold_end_to_end_without_timestamps(spark, ml100k_without_time, tmp_path):
    """Ratings below 3 are not positives: never trained on, never recommended, and counted."""
    cfg = make_config(
        tmp_path, f"input.path={ml100k_without_time}", "input.sep=,", "input.header=true", "input.names=[]",
        "input.columns={user: user_id, item: item_id, ts: null, value: rating}", "prepare.split.method=random",
        "prepare.weight.method=rating", "prepare.weight.threshold=3", "score.table=test.no_time",
        "score.gate.enabled=false", "train.max_len=20", conf="movielens.yaml")
    m = prepare(spark, cfg, DS, now=NOW)
    counts = m["counts"]
    assert counts["input_rows"] == 100_000 and counts["rejected"] == 0 and counts["balanced"]
    assert m["snapshot_time"] is None and "no timestamps" in m["notes"][0]
    snap = snap_dir(cfg)
    marker = json.loads((snap / S.COMPLETE_MARKER).read_text())
    assert marker["has_time"] is False
    original = pd.read_csv(ml100k_without_time)
    disliked = original[original.rating < 3]
    seen = pq.read_table(snap / S.SEEN).to_pandas()
    # k-core and indexing keep nearly all of MovieLens: every disliked pair of a kept user/item
    assert counts["seen_not_positive"] == len(seen) > 0.95 * len(disliked)
    assert (seen[S.VALUE] < 3).all() and seen[S.TS].isna().all()
    train = pq.read_table(snap / S.TRAIN).to_pandas()
    assert (train[S.VALUE] >= 3).all() and train[S.TS].isna().all()
    # no newest rows either: recency is 0 everywhere, and the shipped half-lives do not apply
    assert (train[S.RECENCY] == 0).all()
    t, noted = cfg.train.for_model("mf"), {}
    assert t.recency_half_life == 10.0
    assert check_recency(open_snapshot(cfg.paths.root, cfg.dataset, DS), "mf", t, noted).recency_half_life is None
    assert noted["recency_half_life"] == {"configured": 10.0, "used": None, "why": "no timestamps"}

    with pytest.raises(SnapshotError, match="no timestamps"):  # order models refuse it
        train_model(spark, cfg, DS, "sasrec")
    # the newest 20 items would be an arbitrary 20 without time: ease reads all prepare kept,
    # and tries no shorter window
    ease = train_model(spark, cfg, DS, "ease")
    assert ease["counts"]["max_len"] == {"configured": 20, "used": marker["history_len"], "why": "no timestamps"}
    tried = json.loads((Path(ease["outputs"]["artifact"]) / "history.json").read_text())["epochs"]
    assert {h["max_len"] for h in tried} == {marker["history_len"]}
    cfg.train.model = "ease"
    score(spark, cfg, DS)
    table = spark.sql(f"SELECT user_id, item_id FROM test.no_time WHERE ds = '{DS}'").toPandas()
    assert table.user_id.nunique() == counts["rows"]["users"]
    uid = pq.read_table(snap / S.USER_INDEX).to_pandas().set_index(S.USER_IDX)[S.USER_ID]
    iid = pq.read_table(snap / S.ITEM_INDEX).to_pandas().set_index(S.ITEM_IDX)[S.ITEM_ID]
    seen_ids = set(zip(uid[seen[S.USER_IDX]].to_numpy(), iid[seen[S.ITEM_IDX]].to_numpy()))
    recommended = set(zip(table.user_id, table.item_id))
    assert not recommended & seen_ids


def test_time_rules_are_refused_by_name_without_a_timestamp_column(tmp_path):
    for setting, key in (("prepare.split.method=leave_last", "prepare.split.method=leave_last"),
                         ("prepare.split.method=temporal", "prepare.split.method=temporal"),
                         ("prepare.max_events_per_user_day=100", "prepare.max_events_per_user_day"),
                         ("score.active_days=30", "score.active_days")):
        overrides = ["input.columns.ts=null", "prepare.split.method=random", setting]
        with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*no timestamp"):
            make_config(tmp_path, *overrides, conf="movielens.yaml")
    with pytest.raises(ConfigError, match="input.columns.value"):
        make_config(tmp_path, "input.columns.value=null", "prepare.weight.method=value", conf="movielens.yaml")
    with pytest.raises(ConfigError, match="prepare.weight.threshold"):
        make_config(tmp_path, "prepare.weight.method=rating", conf="movielens.yaml")


def test_play_counts_become_capped_log_confidence_and_bad_counts_are_quarantined(spark, tmp_path):
    """A play-count export: one row per (user, artist) with no time; a missing or negative
    count is quarantined with its reason, and the weight is log1p of the capped sum."""
    rows = [f"u{u},a{a},{(u + 1) * (a + 1) * 10}" for u in range(6) for a in range(5)]
    rows += ["u0,a0,5", "u1,a1,", "u2,a2,-3", "u3,a3,lots"]
    log = write_csv(tmp_path / "plays" / "plays.csv", "user,artist,plays", rows)
    cfg = make_config(tmp_path / "root", "input.format=csv", f"input.path={log.parent}", "dataset=plays",
                      "input.columns={user: user, item: artist, ts: null, value: plays}",
                      "prepare.split.method=random", "prepare.weight.method=value",
                      "prepare.weight.cap_quantile=0.9", "prepare.min_user_interactions=2",
                      "prepare.min_item_interactions=2", "prepare.max_reject_share=0.5",
                      "prepare.min_row_groups=2")
    m = prepare(spark, cfg, DS, now=NOW)
    counts = m["counts"]
    assert counts["rejected_by_reason"] == {S.MISSING_VALUE: 1, S.VALUE_OUT_OF_RANGE: 1, S.BAD_VALUE: 1}
    assert counts["balanced"] and counts["kept"] == 30
    snap = snap_dir(cfg)
    pairs = pd.concat([pq.read_table(snap / n).to_pandas() for n in (S.TRAIN, S.VALID)])
    uid = pq.read_table(snap / S.USER_INDEX).to_pandas().set_index(S.USER_IDX)[S.USER_ID]
    iid = pq.read_table(snap / S.ITEM_INDEX).to_pandas().set_index(S.ITEM_IDX)[S.ITEM_ID]
    got = dict(zip(zip(uid[pairs[S.USER_IDX]], iid[pairs[S.ITEM_IDX]]), pairs[S.WEIGHT]))
    cap = m["weight_cap"]
    assert 200 <= cap <= 300  # the 90th percentile of the 30 pairs' play sums
    assert got[("u0", "a0")] == pytest.approx(float(np.log1p(15.0)))  # 10 + 5, summed
    assert got[("u5", "a4")] == pytest.approx(float(np.log1p(cap)))  # 300, capped
