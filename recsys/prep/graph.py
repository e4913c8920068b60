"""The user-item graph LightGCN propagates over, as prepare writes it: one row per edge.

LightGCN's adjacency is the bipartite graph of the interactions, normalised symmetrically:
the edge (u, i) weighs 1 / sqrt(deg(u) deg(i)). Training fits on the training rows and then
refits on train + valid, so each edge carries both normalisations: `norm_train` over the
training edges alone (null on a validation edge, which the fit must not see) and `norm_all`
over every edge. Degrees are two grouped counts joined back: no collect, no sort of the edges.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import schema as S


def graph_edges(rows: DataFrame, valid_flag: str) -> DataFrame:
    """`rows` (user_idx, item_idx, boolean `valid_flag`) -> user_idx, item_idx, valid (tinyint),
    norm_train, norm_all (float)."""
    is_train = (~F.col(valid_flag)).cast("int")
    edges = rows.select(S.USER_IDX, S.ITEM_IDX, F.col(valid_flag).alias("_valid"), is_train.alias("_t"))
    for key, name in ((S.USER_IDX, "_u"), (S.ITEM_IDX, "_i")):
        degrees = edges.groupBy(key).agg(F.sum("_t").alias(f"{name}_train"), F.count(F.lit(1)).alias(f"{name}_all"))
        edges = edges.join(degrees, key)
    norm_train = F.when(~F.col("_valid"), 1.0 / F.sqrt(F.col("_u_train") * F.col("_i_train")))
    return edges.select(
        F.col(S.USER_IDX).cast("int"), F.col(S.ITEM_IDX).cast("int"),
        F.col("_valid").cast("tinyint").alias(S.GRAPH_VALID),
        norm_train.cast("float").alias(S.GRAPH_NORM_TRAIN),
        (1.0 / F.sqrt(F.col("_u_all") * F.col("_i_all"))).cast("float").alias(S.GRAPH_NORM_ALL))
