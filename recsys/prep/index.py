"""Dense integer ids for users and items, and the maps back to the original ids.

Ids are assigned in a deterministic order (entities with history first, then by original id)
without moving all keys into one partition: each partition numbers its rows locally and adds
the count of the partitions before it.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def dense_index(keys: DataFrame, key: str, idx: str, order: list[str] | None = None) -> DataFrame:
    """Number the distinct rows of `keys` 0..n-1 by `order` (default: `key`).

    Returns `key` (string) and `idx` (int32), plus the ordering columns.
    """
    order = order or [key]
    ranked = (keys.sort(*order)
              .withColumn("_part", F.spark_partition_id())
              .withColumn("_mono", F.monotonically_increasing_id()))
    ranked = ranked.localCheckpoint()  # the sort must not be recomputed differently below
    # monotonically_increasing_id is (partition << 33) + row number within the partition.
    local = F.col("_mono") - F.shiftleft(F.col("_part").cast("long"), 33)
    sizes = ranked.groupBy("_part").count().collect()
    offsets, total = {}, 0
    for row in sorted(sizes, key=lambda r: r["_part"]):
        offsets[row["_part"]] = total
        total += row["count"]
    if total >= 2**31:
        raise ValueError(f"{total} distinct {key} values do not fit an int32 index")
    offset_map = F.create_map(*[F.lit(x) for kv in sorted(offsets.items()) for x in kv]) \
        if offsets else F.create_map().cast("map<int,bigint>")
    return (ranked.withColumn(idx, (offset_map[F.col("_part")] + local).cast("int"))
            .drop("_part", "_mono"))


def build_index(with_history: DataFrame, others: DataFrame | None, key: str, idx: str) -> DataFrame:
    """Index the ids that have interactions first (0..k-1), then ids known only from a side
    table, so that models can size embeddings for every known entity."""
    ids = (with_history.select(F.col(key).cast("string").alias(key)).distinct()
           .withColumn("_cold", F.lit(0)))
    if others is not None:
        extra = (others.select(F.col(key).cast("string").alias(key)).distinct()
                 .join(ids, key, "left_anti").withColumn("_cold", F.lit(1)))
        ids = ids.unionByName(extra)
    return dense_index(ids, key, idx, order=["_cold", key]).select(key, idx)


def apply_index(df: DataFrame, index: DataFrame, key: str, idx: str) -> DataFrame:
    """Replace the original id column by its dense id (inner join: every id must be indexed)."""
    return df.join(index, key, "inner").drop(key)

