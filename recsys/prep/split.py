"""Train/validation splits of the indexed (user, item) rows.

Each split adds a boolean `_valid` column; `restrict_to_known` then drops validation rows whose
user or item never appears in train (no model can score them, and counting them would make every
model look equally bad). Ties are broken by item id, so a split is the same on every run.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import schema as S

VALID_FLAG = "_valid"


def temporal_split(df: DataFrame, valid_fraction: float) -> tuple[DataFrame, object]:
    """Global cutoff: the newest `valid_fraction` of rows (by time) is validation.

    Returns the flagged frame and the cutoff timestamp; rows at the cutoff stay in train.
    """
    secs = F.col(S.TS).cast("long")
    cutoff = df.select(F.percentile_approx(secs, 1.0 - valid_fraction, 100_000)).first()[0]
    flagged = df.withColumn(VALID_FLAG, secs > F.lit(cutoff))
    return flagged, cutoff


def leave_last_split(df: DataFrame, valid_n: int | None, valid_fraction: float) -> DataFrame:
    """Each user's newest `valid_n` rows (or newest fraction) are validation; every user keeps
    at least one training row."""
    w = Window.partitionBy(S.USER_IDX).orderBy(F.col(S.TS).desc(), F.col(S.ITEM_IDX).desc())
    return _per_user(df, w, valid_n, valid_fraction)


def random_split(df: DataFrame, valid_fraction: float, seed: int) -> DataFrame:
    """Per-user stratified random split, reproducible from `seed` (a hash, not an RNG state)."""
    key = F.xxhash64(F.lit(seed), F.col(S.USER_IDX), F.col(S.ITEM_IDX))
    w = Window.partitionBy(S.USER_IDX).orderBy(key, F.col(S.ITEM_IDX))
    return _per_user(df, w, None, valid_fraction)


def _per_user(df: DataFrame, w: Window, valid_n: int | None, valid_fraction: float) -> DataFrame:
    n = F.count(F.lit(1)).over(Window.partitionBy(S.USER_IDX))
    want = F.lit(valid_n) if valid_n is not None else F.round(n * valid_fraction)
    take = F.least(want, n - 1)
    return (df.withColumn("_rn", F.row_number().over(w))
            .withColumn(VALID_FLAG, F.col("_rn") <= take)
            .drop("_rn"))


def restrict_to_known(flagged: DataFrame) -> DataFrame:
    """Mark validation rows of users or items absent from train as `_cold` (to be dropped)."""
    train = flagged.where(~F.col(VALID_FLAG))
    users = train.select(S.USER_IDX).distinct().withColumn("_ku", F.lit(True))
    items = train.select(S.ITEM_IDX).distinct().withColumn("_ki", F.lit(True))
    return (flagged.join(users, S.USER_IDX, "left").join(items, S.ITEM_IDX, "left")
            .withColumn("_cold", F.col(VALID_FLAG) & (F.col("_ku").isNull() | F.col("_ki").isNull()))
            .drop("_ku", "_ki"))
