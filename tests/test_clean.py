"""Every cleaning rule and every reject reason, on tiny hand-written frames."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from pyspark.sql import functions as F

from recsys import schema as S
from recsys.prep import clean

from conftest import NOW

RAW_COLUMNS = [S.USER_ID, S.ITEM_ID, S.TS, S.EVENT, S.VALUE, S.RAW, S.CORRUPT]


def raw_frame(spark, rows):
    """Rows of (user, item, ts, event, value[, corrupt]) as the reader produces them."""
    full = [(*r[:5], "raw", r[5] if len(r) > 5 else None) for r in rows]
    return spark.createDataFrame(full, ", ".join(f"{c} string" for c in RAW_COLUMNS))


def reasons(spark, rows, **kw):
    args = dict(ts_format="unix", event_types=["view", "buy"], value_range=(1.0, 5.0),
                latest_allowed=NOW)
    args.update(kw)
    out = clean.validate(raw_frame(spark, rows), **args)
    return [r[S.REASON] for r in out.collect()]


def test_each_reject_reason(spark):
    good_ts = "1700000000"
    rows = [
        ("u1", "i1", good_ts, "view", "3"),                  # good
        ("u1", "i1", good_ts, "view", None, "u1,i1,,,"),     # malformed line
        ("", "i1", good_ts, "view", "3"),                    # empty user
        (None, "i1", good_ts, "view", "3"),                  # null user
        ("u1", "  ", good_ts, "view", "3"),                  # blank item
        ("u1", "i1", "yesterday", "view", "3"),              # unparsable time
        ("u1", "i1", None, "view", "3"),                     # no time
        ("u1", "i1", "4102444800", "view", "3"),             # 2100-01-01: future
        ("u1", "i1", good_ts, "teleport", "3"),              # unknown event
        ("u1", "i1", good_ts, None, "3"),                    # no event where events are known
        ("u1", "i1", good_ts, "buy", "lots"),                # unparsable value
        ("u1", "i1", good_ts, "buy", "6"),                   # out of range
        ("u1", "i1", good_ts, "buy", "0.5"),                 # out of range, below
        ("u1", "i1", good_ts, "BUY", ""),                    # no value is fine; case-folded
    ]
    assert reasons(spark, rows) == [
        None, S.MALFORMED_LINE, S.MISSING_USER, S.MISSING_USER, S.MISSING_ITEM,
        S.BAD_TIMESTAMP, S.BAD_TIMESTAMP, S.FUTURE_TIMESTAMP, S.UNKNOWN_EVENT,
        S.UNKNOWN_EVENT, S.BAD_VALUE, S.VALUE_OUT_OF_RANGE, S.VALUE_OUT_OF_RANGE, None]


def test_first_failing_rule_wins_and_optional_rules_can_be_off(spark):
    rows = [("", "", "bad", "teleport", "99")]
    assert reasons(spark, rows) == [S.MISSING_USER]
    rows = [("u", "i", "1700000000", "anything", "99")]
    assert reasons(spark, rows, event_types=None, value_range=None) == [None]


def test_future_is_relative_to_the_given_limit(spark):
    limit = datetime(2023, 11, 14, 22, 13, 21, tzinfo=timezone.utc)  # 1700000001
    rows = [("u", "i", "1700000001", "view", None), ("u", "i", "1700000002", "view", None)]
    assert reasons(spark, rows, latest_allowed=limit) == [None, S.FUTURE_TIMESTAMP]


@pytest.mark.parametrize("fmt, text", [
    ("unix", "1700000000"), ("unix_ms", "1700000000000"),
    ("iso", "2023-11-14T22:13:20"), ("yyyy/MM/dd HH:mm:ss", "2023/11/14 22:13:20"),
])
def test_timestamp_formats(spark, fmt, text):
    df = spark.createDataFrame([(text,)], "t string")
    got = df.select(clean.parse_timestamp(F.col("t"), fmt).cast("long")).first()[0]
    assert got == 1_700_000_000


def test_exact_duplicates_dropped_but_not_repeats(spark):
    df = clean.validate(raw_frame(spark, [
        ("u", "i", "100", "view", None), ("u", "i", "100", "view", None),
        ("u", "i", "200", "view", None)]),
        ts_format="unix", event_types=["view"], value_range=None, latest_allowed=NOW)
    assert clean.drop_exact_duplicates(df).count() == 2


def events(spark, rows):
    """(user, item, unix seconds, event, value) -> a validated frame."""
    df = spark.createDataFrame(rows, "user_id string, item_id string, ts long, event string, value double")
    return df.withColumn(S.TS, F.timestamp_seconds(S.TS))


def test_to_pairs_sums_weights_and_keeps_latest(spark):
    df = events(spark, [("u", "i", 100, "view", None), ("u", "i", 300, "buy", None),
                        ("u", "i", 200, "rate", 4.0), ("u", "j", 50, "view", None)])
    pairs = {(r.user_id, r.item_id): r for r in
             clean.to_pairs(df, {"view": 1.0, "buy": 5.0, "rate": 2.0}, 1.0).collect()}
    ui = pairs[("u", "i")]
    assert ui.weight == pytest.approx(8.0) and ui.n_events == 3 and ui.value == 4.0
    assert ui.ts.timestamp() == 300  # the latest event's time
    assert pairs[("u", "j")].weight == pytest.approx(1.0) and pairs[("u", "j")].value is None


def test_abusive_users_counted_per_day(spark):
    day = 86400
    rows = [("bot", f"i{k}", 10 + k, "view", None) for k in range(4)]          # 4 on one day
    rows += [("human", f"i{k}", 10 + k * day, "view", None) for k in range(4)]  # 1 a day
    bots = clean.abusive_users(events(spark, rows), max_events_per_day=3)
    assert [r.user_id for r in bots.collect()] == ["bot"]


def test_kcore_iterates_until_stable(spark):
    # min 2 per user and item. Item c has one user, so it goes; then user z has only item a
    # left and goes; then item a has only x and y left, which is still 2: stable after that.
    rows = [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b"), ("z", "a"), ("z", "c")]
    pairs = spark.createDataFrame(rows, "user_id string, item_id string")
    core, passes = clean.kcore(pairs, 2, 2)
    assert sorted(map(tuple, core.collect())) == [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b")]
    assert passes >= 2


def test_value_weights_sum_the_values_then_cap_and_log1p(spark):
    df = events(spark, [("u", "i", 100, None, 2000.0), ("u", "i", 200, None, 1000.0),
                        ("u", "j", 50, None, 3.0), ("v", "j", 60, None, 1.0), ("v", "k", 70, None, 0.0)])
    pairs = clean.to_pairs(df, {}, 1.0, method="value")
    summed = {(r.user_id, r.item_id): r.weight for r in pairs.collect()}
    assert summed == {("u", "i"): 3000.0, ("u", "j"): 3.0, ("v", "j"): 1.0, ("v", "k"): 0.0}
    capped, cap = clean.transform_weights(pairs, 0.75, "log1p")
    assert cap == pytest.approx(3.0)  # the 75th percentile of (0, 1, 3, 3000)
    got = {(r.user_id, r.item_id): r.weight for r in capped.collect()}
    assert got[("u", "i")] == pytest.approx(np.log1p(3.0)) and got[("v", "k")] == 0.0
    plain, none = clean.transform_weights(pairs, None, "none")
    assert none is None and {(r.user_id, r.item_id): r.weight for r in plain.collect()} == summed


def test_without_time_no_timestamp_rule_applies_and_a_value_can_be_required(spark):
    raw = spark.createDataFrame(
        [("u", "i", None, None, "5", None, None), ("u", "j", None, None, "", None, None),
         ("u", "k", None, None, "x", None, None)],
        "user_id string, item_id string, ts string, event string, value string, "
        "raw string, _corrupt_record string")
    out = clean.validate(raw, ts_format="unix", event_types=None, value_range=None,
                         latest_allowed=NOW, has_time=False, value_required=True)
    reasons = {r.item_id: r.reason for r in out.collect()}
    assert reasons == {"i": None, "j": S.MISSING_VALUE, "k": S.BAD_VALUE}
    with_time = clean.validate(raw, ts_format="unix", event_types=None, value_range=None,
                               latest_allowed=NOW)
    assert {r.reason for r in with_time.collect()} == {S.BAD_TIMESTAMP}


def test_without_time_a_pair_keeps_its_highest_value(spark):
    df = events(spark, [("u", "i", None, None, 2.0), ("u", "i", None, None, 4.0)])
    (pair,) = clean.to_pairs(df, {}, 1.0, has_time=False).collect()
    assert pair.value == 4.0 and pair.ts is None and pair.weight == 2.0
