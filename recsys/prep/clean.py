"""Cleaning transforms: validate and quarantine, dedupe, abuse filter, events to weighted pairs, k-core.

Each is a function from DataFrame to DataFrame with plain arguments, so tests call them on tiny
hand-written frames. Row accounting stays exact: every input row ends up kept, rejected,
deduplicated (exact copies, or repeats merged into one (user, item) row) or filtered, and the
`n_events` column carries how many raw events a merged row stands for.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys import schema as S


def parse_timestamp(col: Column, ts_format: str) -> Column:
    """Text to timestamp; anything unparsable becomes null (and is then rejected)."""
    text = F.trim(col)
    if ts_format in ("unix", "unix_ms"):
        num = text.cast("double")
        ok = num.isNotNull() & ~F.isnan(num)
        seconds = num / 1000.0 if ts_format == "unix_ms" else num
        return F.when(ok, F.timestamp_seconds(seconds.cast("long")))
    if ts_format == "iso":
        return F.to_timestamp(text)
    return F.to_timestamp(text, ts_format)


def validate(df: DataFrame, *, ts_format: str, event_types: list[str] | None,
             value_range: tuple[float, float] | None, latest_allowed: datetime,
             has_time: bool = True, value_required: bool = False) -> DataFrame:
    """Type the raw string columns and give each row the first reject reason that applies.

    `reason` is null for a good row. `event_types` None means the log has no event column;
    otherwise an event outside it is `unknown_event`. A missing value is allowed (not every
    event carries a rating) unless `value_required` (the weight is built from it); one that
    does not parse is `bad_value`. Without time (`has_time` False) `ts` is null and no
    timestamp rule applies.
    """
    user = F.trim(F.col(S.USER_ID))
    item = F.trim(F.col(S.ITEM_ID))
    ts = parse_timestamp(F.col(S.TS), ts_format) if has_time else F.lit(None).cast("timestamp")
    event = F.lower(F.trim(F.col(S.EVENT)))
    value_text = F.trim(F.col(S.VALUE))
    value = value_text.cast("double")
    has_value = value_text.isNotNull() & (value_text != "")

    reason = (F.when(F.col(S.CORRUPT).isNotNull(), S.MALFORMED_LINE)
              .when(user.isNull() | (user == ""), S.MISSING_USER)
              .when(item.isNull() | (item == ""), S.MISSING_ITEM))
    if has_time:
        reason = (reason.when(ts.isNull(), S.BAD_TIMESTAMP)
                  .when(ts > F.lit(latest_allowed), S.FUTURE_TIMESTAMP))
    if event_types is not None:
        known = F.lit(False) if not event_types else event.isin(*event_types)
        reason = reason.when(event.isNull() | ~known, S.UNKNOWN_EVENT)
    if value_required:
        reason = reason.when(~has_value, S.MISSING_VALUE)
    reason = reason.when(has_value & (value.isNull() | F.isnan(value)), S.BAD_VALUE)
    if value_range is not None:
        lo, hi = value_range
        reason = reason.when(has_value & ((value < lo) | (value > hi)), S.VALUE_OUT_OF_RANGE)

    return df.select(
        user.alias(S.USER_ID), item.alias(S.ITEM_ID), ts.alias(S.TS),
        event.alias(S.EVENT), F.when(has_value, value).alias(S.VALUE),
        # Only rejects need the raw row; keeping it for every row doubles what is cached.
        F.when(reason.isNotNull(), F.col(S.RAW)).alias(S.RAW), reason.alias(S.REASON),
    )


def drop_exact_duplicates(df: DataFrame) -> DataFrame:
    """The same event logged twice (same user, item, time, type and value) counts once.
    Without time, two rows alike in all the rest are taken for one row exported twice."""
    return df.dropDuplicates([S.USER_ID, S.ITEM_ID, S.TS, S.EVENT, S.VALUE])


def abusive_users(df: DataFrame, max_events_per_day: int) -> DataFrame:
    """Users with more than `max_events_per_day` events on any one day (bots, scrapers)."""
    per_day = df.groupBy(S.USER_ID, F.to_date(S.TS).alias("day")).count()
    return (per_day.where(F.col("count") > max_events_per_day)
            .select(S.USER_ID).distinct())


def to_pairs(df: DataFrame, event_weights: dict[str, float], default_weight: float,
             method: str = "events", has_time: bool = True) -> DataFrame:
    """One row per (user, item): its implicit confidence, latest time, the value of the latest
    event that has one (without time: the highest), and `n_events` merged.

    The confidence (`prepare.weight.method`) is the sum of the event weights (`events`,
    `rating`: the rating only decides what is a positive, `rated_positive`), or the sum of the
    events' values (`value`: plays, seconds; `transform_weights` then caps and squashes it)."""
    if method == "value":
        weight = F.col(S.VALUE)
    elif event_weights:
        mapping = F.create_map(*[F.lit(x) for kv in sorted(event_weights.items()) for x in kv])
        weight = mapping[F.col(S.EVENT)]
    else:
        weight = F.lit(default_weight)
    if has_time:
        value = F.max_by(S.VALUE, F.when(F.col(S.VALUE).isNotNull(), F.col(S.TS)))
    else:
        value = F.max(S.VALUE)
    return (df.withColumn("_w", weight.cast("double"))
            .groupBy(S.USER_ID, S.ITEM_ID)
            .agg(F.sum("_w").cast("float").alias(S.WEIGHT),
                 F.max(S.TS).alias(S.TS),
                 value.cast("float").alias(S.VALUE),
                 F.count(F.lit(1)).alias(S.N_EVENTS)))


def transform_weights(pairs: DataFrame, cap_quantile: float | None, transform: str) -> tuple[DataFrame, float | None]:
    """Summed values (plays, seconds) as confidence: capped at the `cap_quantile` of all pairs'
    sums (one heavy listener's 20,000 plays should not outweigh everything), then `log1p` or
    kept. Returns the pairs and the cap (None without one)."""
    cap = None
    w = F.col(S.WEIGHT)
    if cap_quantile is not None:
        cap = pairs.select(F.percentile_approx(S.WEIGHT, cap_quantile, 10_000)).first()[0]
        w = F.least(w, F.lit(cap))
    if transform == "log1p":
        w = F.log1p(w)
    return pairs.withColumn(S.WEIGHT, w.cast("float")), cap


def rated_positive(threshold: float) -> Column:
    """A pair whose rating (`value`) reaches `threshold`: the rest were seen and disliked."""
    return F.col(S.VALUE) >= F.lit(threshold)


def kcore_step(pairs: DataFrame, min_user: int, min_item: int) -> DataFrame:
    """One pass of the k-core filter: drop users and items below their minimum count.

    Counts are small grouped tables joined back (no sort of all pairs, as a window would)."""
    users = pairs.groupBy(S.USER_ID).count().where(F.col("count") >= min_user).select(S.USER_ID)
    items = pairs.groupBy(S.ITEM_ID).count().where(F.col("count") >= min_item).select(S.ITEM_ID)
    return (pairs.join(users, S.USER_ID, "left_semi").join(items, S.ITEM_ID, "left_semi")
            .select(*pairs.columns))


def kcore(pairs: DataFrame, min_user: int, min_item: int, max_iter: int = 50) -> tuple[DataFrame, int]:
    """Repeat `kcore_step` until every user and item meets its minimum (removing an item can
    push a user under, and back). Returns the core and the number of passes it took."""
    current = pairs.localCheckpoint()
    n = current.count()
    for it in range(1, max_iter + 1):
        nxt = kcore_step(current, min_user, min_item).localCheckpoint()
        m = nxt.count()
        if m == n:
            return nxt, it
        current, n = nxt, m
    raise RuntimeError(f"k-core filter did not converge in {max_iter} passes")
