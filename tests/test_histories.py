"""The histories prepare writes, and the array helpers that cut and align them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from recsys import schema as S
from recsys.config import TrainConfig, load_config
from recsys.errors import ConfigError
from recsys.models import build_model
from recsys.prep.pipeline import prepare
from recsys.ranking.topk import ragged_tail
from recsys.snapshot import Histories, read_histories, right_align, snapshot_path
from recsys.train.tasks import SetTask, phase_counts, random_skips

from conftest import CONF, NOW, make_config, write_csv

DS = "2026-11-24"


def test_right_align_keeps_the_newest_kept_entries_in_order():
    items = np.array([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 7]])
    keep = np.array([[1, 1, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]], bool)
    assert right_align(items, keep, 4).tolist() == [[-1, 3, 4, 6], [3, 4, 5, 6], [-1, -1, -1, -1]]
    assert right_align(items, keep, 8)[1].tolist() == [-1, -1, 1, 2, 3, 4, 5, 6]


def test_a_training_window_can_end_before_the_newest_item_and_never_reads_validation_rows():
    items = np.array([[1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, 7, 8]])
    keep = np.array([[1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]], bool)  # item 4 is a validation row
    assert right_align(items, keep, 2, np.array([1, 0])).tolist() == [[3, 5], [7, 8]]
    assert right_align(items, keep, 2, np.array([3, 0])).tolist() == [[1, 2], [7, 8]]
    gen = torch.Generator().manual_seed(0)
    skips = np.stack([random_skips(items, keep, 2, gen) for _ in range(3000)])
    # row 0: 5 kept entries, 4 windows of 2, each drawn about equally often; row 1: one window
    assert np.bincount(skips[:, 0]).tolist() == pytest.approx([750] * 4, abs=100)
    assert set(skips[:, 1]) == {0}


def test_history_window_all_trains_on_the_whole_history_and_scores_the_newest():
    spec = {"model": {"n_items": 9}, "history_len": 6}
    batch = {S.HISTORY_ITEMS: np.array([[1, 2, 3, 4, 5, 6]]), S.HISTORY_VALID: np.array([[0, 0, 0, 0, 0, 1]])}
    gen = torch.Generator().manual_seed(0)
    newest = SetTask(spec, TrainConfig(max_len=2), phase_counts(np.ones(9), np.zeros(9)))
    whole = SetTask(spec, TrainConfig(max_len=2, history_window="all"), phase_counts(np.ones(9), np.zeros(9)))
    assert newest.sequences(batch, "fit", gen).tolist() == [[4, 5]]
    assert whole.sequences(batch, "fit", gen).tolist() == [[-1, 1, 2, 3, 4, 5]]
    assert whole.sequences(batch, "refit", gen).tolist() == [[1, 2, 3, 4, 5, 6]]
    model = build_model({"model": "multvae", "n_items": 9, "vae_hidden": [8, 4], "vae_dropout": 0.5,
                         "max_len": 2})
    seq = torch.as_tensor(whole.sequences(batch, "refit", gen))
    torch.testing.assert_close(model.history_vectors(seq), model.history_vectors(seq[:, -2:]))


def test_ragged_tail_and_history_rows():
    tail = ragged_tail(np.array([0, 3, 3, 8]), np.array([1, 2, 3, 4, 5, 6, 7, 8]), 4)
    assert tail.tolist() == [[-1, 1, 2, 3], [-1, -1, -1, -1], [5, 6, 7, 8]]
    h = Histories(np.array([2, 5, 9]), np.arange(6).reshape(3, 2))
    assert h.rows(np.array([5, 1, 9, 10])).tolist() == [[2, 3], [-1, -1], [4, 5], [-1, -1]]


def test_max_len_below_one_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="train.max_len must be at least 1, got 0"):
        load_config(CONF / "movielens.yaml", ["train.max_len=0"])
    with pytest.raises(ConfigError, match="train.per_model.sasrec.max_len must be at least 1, got -2"):
        load_config(CONF / "movielens.yaml", ["train.per_model={sasrec: {max_len: -2}}"])


def test_prepare_writes_each_users_newest_rows_in_time_order(spark, tmp_path):
    """u1: 5 rows, one tie in time (broken by item id), the newest is validation, the oldest
    does not fit a history of 4; u2: one row only, padded."""
    rows = ["u1,i3,100", "u1,i1,200", "u1,i4,300", "u1,i2,300", "u1,i5,400",
            "u2,i1,150", "u3,i5,120", "u3,i2,130", "u3,i3,140"]
    log = write_csv(tmp_path / "log.csv", "user_id,item_id,ts", rows)
    cfg = make_config(tmp_path, "input.format=csv", f"input.path={log}", "dataset=toy",
                      "prepare.min_user_interactions=1", "prepare.min_item_interactions=1",
                      "prepare.split.method=leave_last", "prepare.split.valid_n=1",
                      "prepare.min_row_groups=2", "prepare.history_len=4")
    m = prepare(spark, cfg, DS, now=NOW)
    snap = snapshot_path(cfg.paths.root, cfg.dataset, DS)
    users = pq.read_table(f"{snap}/{S.USER_INDEX}").to_pandas().set_index(S.USER_ID)[S.USER_IDX]
    items = pq.read_table(f"{snap}/{S.ITEM_INDEX}").to_pandas().set_index(S.ITEM_IDX)[S.ITEM_ID]
    hist = pq.read_table(f"{snap}/{S.HISTORIES}").to_pandas().set_index(S.USER_IDX)
    name = lambda ids: [items[i] if i >= 0 else None for i in ids]  # noqa: E731

    u1 = hist.loc[users["u1"]]
    assert name(u1[S.HISTORY_ITEMS]) == ["i1", "i2", "i4", "i5"]  # i3 (oldest) left out; i2 < i4 at ts 300
    assert list(u1[S.HISTORY_TS]) == [200, 300, 300, 400]
    assert list(u1[S.HISTORY_VALID]) == [0, 0, 0, 1]  # the newest row is the validation row
    assert (u1[S.HISTORY_LENGTH], u1[S.HISTORY_DROPPED]) == (4, 1)
    u2 = hist.loc[users["u2"]]
    assert name(u2[S.HISTORY_ITEMS]) == [None, None, None, "i1"]
    assert list(u2[S.HISTORY_WEIGHTS]) == [0.0, 0.0, 0.0, 1.0] and u2[S.HISTORY_LENGTH] == 1
    assert m["counts"]["histories"] == {"history_len": 4, "users": 3, "truncated_users": 1,
                                        "rows_left_out": 1}

    # The first fit reads histories without their validation rows, the refit (and scoring) with.
    fit = read_histories(f"{snap}/{S.HISTORIES}", 3, include_valid=False)
    row = fit.rows(np.array([users["u1"]]))[0]
    assert name(row) == ["i1", "i2", "i4"]
    full = read_histories(f"{snap}/{S.HISTORIES}", 3, include_valid=True, users=np.array([users["u3"]]))
    assert list(full.users) == [users["u3"]] and name(full.items[0]) == ["i5", "i2", "i3"]

    # Each train and valid row carries its place from its user's newest row, ties as above.
    pairs = pd.concat([pq.read_table(f"{snap}/{d}").to_pandas() for d in (S.TRAIN, S.VALID)])
    u1_rows = pairs[pairs[S.USER_IDX] == users["u1"]].sort_values(S.RECENCY)
    assert name(u1_rows[S.ITEM_IDX]) == ["i5", "i4", "i2", "i1", "i3"]
    assert list(u1_rows[S.RECENCY]) == [0, 1, 2, 3, 4]
    assert pairs.loc[pairs[S.USER_IDX] == users["u2"], S.RECENCY].tolist() == [0]
