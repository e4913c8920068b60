"""Per-user histories for the history models: the newest rows of each user in time order.

One row per user with fixed-length lists (Petastorm reads a list column whose rows all have one
length as a 2-D array, and refuses lists of unequal length: see DESIGN.md), padded on the left,
so the newest item is always in the last position. Ties in time are broken by item id, as the
splits break them: of two rows with one timestamp, the higher item id counts as the newer.
A log without time has no newest rows: its histories hold a seeded random subset in a seeded
random order (a hash of the seed, user and item, as the random split draws), and ts 0.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import schema as S


def with_recency(rows: DataFrame, has_time: bool) -> DataFrame:
    """`rows` (user_idx, item_idx, ts) plus `recency` int: 0 for each user's newest row, 1 for
    the one before, ... (ties in time by item id, as histories break them); 0 for every row of
    a log without time, which has no newest rows."""
    if not has_time:
        return rows.withColumn(S.RECENCY, F.lit(0).cast("int"))
    newest_first = Window.partitionBy(S.USER_IDX).orderBy(F.col(S.TS).desc(), F.col(S.ITEM_IDX).desc())
    return rows.withColumn(S.RECENCY, (F.row_number().over(newest_first) - 1).cast("int"))


def histories(rows: DataFrame, length: int, valid_flag: str, seed: int | None = None) -> DataFrame:
    """`rows` (user_idx, item_idx, ts, weight and the boolean `valid_flag`) -> one row per user:
    user_idx, length, dropped, items, ts, weights, valid (see `recsys.snapshot`). With `seed`
    (a log without time) the order is a seeded hash instead of time."""
    ts = F.coalesce(F.col(S.TS).cast("long"), F.lit(0))
    order = ts if seed is None else F.xxhash64(F.lit(seed), F.col(S.USER_IDX), F.col(S.ITEM_IDX))
    rows = rows.withColumn("_order", order)
    newest_first = Window.partitionBy(S.USER_IDX).orderBy(F.col("_order").desc(), F.col(S.ITEM_IDX).desc())
    recent = (rows.withColumn("_rn", F.row_number().over(newest_first))
              .withColumn("_total", F.count(F.lit(1)).over(Window.partitionBy(S.USER_IDX)))
              .where(F.col("_rn") <= length))
    entry = F.struct(F.col("_order").alias("o"), F.col(S.ITEM_IDX).alias("i"), ts.alias("t"),
                     F.col(S.WEIGHT).cast("float").alias("w"),
                     F.col(valid_flag).cast("tinyint").alias("v"))
    grouped = recent.groupBy(S.USER_IDX).agg(
        F.sort_array(F.collect_list(entry)).alias("_h"), F.first("_total").alias("_total"))
    n = F.size("_h")
    pad = F.lit(length) - n

    def padded(field: str, fill, kind: str):
        return F.concat(F.array_repeat(F.lit(fill).cast(kind), pad),
                        F.transform("_h", lambda x: x[field]))

    return grouped.select(
        F.col(S.USER_IDX).cast("int").alias(S.USER_IDX),
        n.cast("int").alias(S.HISTORY_LENGTH),
        (F.col("_total") - n).cast("int").alias(S.HISTORY_DROPPED),
        padded("i", -1, "int").alias(S.HISTORY_ITEMS),
        padded("t", 0, "long").alias(S.HISTORY_TS),
        padded("w", 0.0, "float").alias(S.HISTORY_WEIGHTS),
        padded("v", 0, "tinyint").alias(S.HISTORY_VALID),
    )
