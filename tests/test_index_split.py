"""Dense ids and the three splits."""
from __future__ import annotations

from pyspark.sql import functions as F

from recsys import schema as S
from recsys.prep import split
from recsys.prep.index import apply_index, build_index, dense_index


def test_dense_index_is_contiguous_and_ordered_across_partitions(spark):
    keys = spark.createDataFrame([(f"k{n:03d}",) for n in range(200)], "k string").repartition(7)
    out = {r.k: r.idx for r in dense_index(keys, "k", "idx").collect()}
    assert sorted(out.values()) == list(range(200))
    assert [k for k, _ in sorted(out.items(), key=lambda kv: kv[1])] == sorted(out)


def test_index_puts_ids_with_history_first_and_round_trips(spark):
    log = spark.createDataFrame([("b", "x"), ("c", "x"), ("b", "y")], "user_id string, item_id string")
    side = spark.createDataFrame([("a",), ("b",), ("zz",)], "user_id string")
    index = build_index(log, side, S.USER_ID, S.USER_IDX)
    assert sorted(map(tuple, index.collect()), key=lambda r: r[1]) == [
        ("b", 0), ("c", 1), ("a", 2), ("zz", 3)]
    indexed = apply_index(log, index, S.USER_ID, S.USER_IDX)
    back = indexed.join(index, S.USER_IDX).select(S.USER_ID, S.ITEM_ID)
    assert sorted(map(tuple, back.collect())) == sorted(map(tuple, log.collect()))


def interactions(spark, rows):
    """(user_idx, item_idx, unix seconds)."""
    df = spark.createDataFrame(rows, "user_idx int, item_idx int, ts long")
    return df.withColumn(S.TS, F.timestamp_seconds(S.TS))


def flags(df):
    return {(r.user_idx, r.item_idx): r[split.VALID_FLAG] for r in df.collect()}


def test_temporal_split_respects_the_cutoff(spark):
    rows = [(u, i, 1000 * u + 10 * i) for u in range(5) for i in range(10)]
    flagged, cutoff = split.temporal_split(interactions(spark, rows), 0.2)
    f = flagged.collect()
    train_max = max(r.ts.timestamp() for r in f if not r[split.VALID_FLAG])
    valid_min = min(r.ts.timestamp() for r in f if r[split.VALID_FLAG])
    assert train_max <= cutoff < valid_min
    assert sum(r[split.VALID_FLAG] for r in f) == 10  # the newest 20% of 50 rows


def test_leave_last_takes_each_users_newest_and_breaks_ties_by_item(spark):
    rows = [(0, 1, 10), (0, 2, 20), (0, 3, 30),   # user 0: item 3 is newest
            (1, 1, 50), (1, 2, 50), (1, 3, 40),   # user 1: tie at 50, higher item id wins
            (2, 5, 10)]                            # one row: stays in train
    got = flags(split.leave_last_split(interactions(spark, rows), 1, 0.1))
    assert {k for k, v in got.items() if v} == {(0, 3), (1, 2)}


def test_random_split_is_per_user_and_reproducible(spark):
    rows = [(u, i, i) for u in range(4) for i in range(10)]
    df = interactions(spark, rows)
    a = flags(split.random_split(df, 0.3, seed=1))
    assert a == flags(split.random_split(df, 0.3, seed=1))
    assert a != flags(split.random_split(df, 0.3, seed=2))
    for u in range(4):
        assert sum(v for (uu, _), v in a.items() if uu == u) == 3


def test_validation_rows_of_unknown_users_or_items_are_marked_cold(spark):
    rows = [(0, 0, 1), (0, 1, 2), (1, 0, 3), (0, 2, 9), (2, 0, 9)]
    flagged, _ = split.temporal_split(interactions(spark, rows), 0.4)
    cold = {(r.user_idx, r.item_idx): r["_cold"] for r in split.restrict_to_known(flagged).collect()}
    assert cold[(0, 2)] and cold[(2, 0)]  # item 2 and user 2 exist only after the cutoff
    assert not any(cold[k] for k in [(0, 0), (0, 1), (1, 0)])
