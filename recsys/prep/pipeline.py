"""The prepare step: raw log in, a published snapshot of clean training data out.

validate → quarantine → dedupe → abuse filter → weighted pairs → k-core → dense ids → split →
features → Parquet in a staging directory → one rename into `<root>/data/<dataset>/ds=<ds>`.
Nothing is published if anything fails, including a rejected share above the threshold.
"""
from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import privacy, snapshot
from recsys import schema as S
from recsys.config import Config, PrepareConfig, to_dict
from recsys.errors import RejectShareError
from recsys.manifest import Manifest
from recsys.prep import clean, features, split
from recsys.prep.graph import graph_edges
from recsys.prep.histories import histories, with_recency
from recsys.prep.index import apply_index, build_index
from recsys.sources import read_log, read_source, require_columns
from recsys.storage import Storage, join, resolve_root


def training_files(n_rows: int, cfg: PrepareConfig) -> int:
    """Parquet files (each one row group) for train/valid: a multiple of `min_row_groups`, so
    2, 4, 8 or 16 training workers get equal shares, and none above the configured maximum."""
    files = max(1, math.ceil(n_rows / cfg.max_rows_per_row_group))
    return math.ceil(files / cfg.min_row_groups) * cfg.min_row_groups


def write_parquet(df: DataFrame, path: str, files: int) -> None:
    """`files` files of nearly equal size (round-robin repartition: one row group each)."""
    df.repartition(files).write.mode("overwrite").parquet(path)


NO_TIME_NOTE = ("the log has no timestamps (input.columns.ts: null): split random per user; "
                "no timestamp rules; repeats merged without a latest (a pair's value is its highest); "
                "histories hold a seeded random subset in a seeded random order, so the sequence "
                "models (sasrec, gru4rec) refuse this snapshot; recency features are null")


def _value_range(p: PrepareConfig) -> tuple[float, float] | None:
    """The configured range; a value summed into the weight must also be non-negative."""
    lo, hi = p.value_range if p.value_range else (-math.inf, math.inf)
    if p.weight.method == "value":
        lo = max(lo, 0.0)
    return None if (lo, hi) == (-math.inf, math.inf) else (lo, hi)


def _reject_message(counts: dict[str, int], total: int, limit: float) -> str:
    rejected = sum(counts.values())
    detail = ", ".join(f"{r} {n}" for r, n in sorted(counts.items()))
    return (f"rejected {rejected} of {total} rows ({rejected / total:.1%}), above "
            f"prepare.max_reject_share={limit:.1%}: {detail}; nothing was published")


def prepare(spark: SparkSession, cfg: Config, ds: str, *, now: datetime | None = None) -> Manifest:
    """Run the prepare step for snapshot `ds` and return its manifest (also written to disk)."""
    root = resolve_root(cfg.paths.root)
    store = Storage(spark)
    final = snapshot.snapshot_path(root, cfg.dataset, ds)
    staging_root = snapshot.staging_root(root, cfg.dataset)
    for leftover in store.list(staging_root):  # a crashed run of this ds left these behind
        if leftover.startswith(f"ds={ds}-"):
            store.delete(join(staging_root, leftover))
    staging = join(staging_root, f"ds={ds}-{uuid.uuid4().hex[:8]}")
    m = Manifest("prepare", ds, to_dict(cfg))
    m.data["inputs"] = {"log": cfg.input.path or cfg.input.table, "format": cfg.input.format,
                        "users": cfg.users and (cfg.users.path or cfg.users.table),
                        "items": cfg.items and (cfg.items.path or cfg.items.table)}
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    with m.recorded(lambda data: store.write_json(join(root, "runs", ds, "prepare.json"), data)):
        erased = (privacy.read_users(spark, cfg.privacy.erase, "privacy.erase").localCheckpoint()
                  if cfg.privacy.erase is not None else None)
        try:
            _run(spark, cfg, m, staging, now, erased)
            with m.timed("publish"):
                store.publish(staging, final)
        except BaseException:
            store.delete(staging)  # never leave a half-written snapshot behind
            raise
        if erased is not None:  # older snapshots and what was trained on them
            with m.timed("erase"):
                m.data["counts"]["erasure"].update(
                    privacy.purge_held(spark, root, cfg.dataset, final, erased))
        m.data["outputs"] = {"snapshot": final,
                             **{name: join(final, name) for name in S.PREPARED_DATASETS}}
    return m


def _run(spark: SparkSession, cfg: Config, m: Manifest, staging: str, now: datetime,
         erased: DataFrame | None = None) -> None:
    p, w = cfg.prepare, cfg.prepare.weight
    counts: dict[str, Any] = m.data["counts"]
    latest = now + timedelta(hours=p.future_tolerance_hours)
    has_time = cfg.input.columns.ts is not None
    m.data["future_cutoff"] = latest.isoformat() if has_time else None
    if not has_time:
        m.data["notes"] = [NO_TIME_NOTE]

    with m.timed("validate"):
        raw, ts_format = read_log(spark, cfg.input)
        validated = clean.validate(
            raw, ts_format=ts_format,
            event_types=sorted(p.event_weights) if cfg.input.columns.event else None,
            value_range=_value_range(p), latest_allowed=latest, has_time=has_time,
            value_required=w.method != "events",
        )
        if erased is not None:
            validated = privacy.flag_erased(validated, erased)
        cached = validated = validated.persist(StorageLevel.MEMORY_AND_DISK)
        by_reason = {r[S.REASON]: r["count"] for r in validated.groupBy(S.REASON).count().collect()}
        if erased is not None:  # counted, never quarantined nor kept
            found = validated.where(F.col(S.REASON) == S.ERASED).select(S.USER_ID).distinct().count()
            counts["erasure"] = {"listed_users": erased.count(), "users_in_log": found,
                                 "log_rows_removed": by_reason.pop(S.ERASED, 0)}
            validated = validated.where(F.col(S.REASON).isNull() | (F.col(S.REASON) != S.ERASED))
        total = sum(by_reason.values())
        good_rows = by_reason.pop(None, 0)
        rejected = sum(by_reason.values())
        counts.update(input_rows=total, rejected=rejected, rejected_by_reason=by_reason)
        if total == 0:
            raise RejectShareError(f"the interaction log {cfg.input.path or cfg.input.table} "
                                   "has no rows; nothing was published")
        if rejected / total > p.max_reject_share:
            raise RejectShareError(_reject_message(by_reason, total, p.max_reject_share))

    with m.timed("rejects"):
        (validated.where(F.col(S.REASON).isNotNull()).select(S.RAW, S.REASON)
         .coalesce(max(1, math.ceil(rejected / 1_000_000)))
         .write.mode("overwrite").parquet(join(staging, S.REJECTS)))

    with m.timed("clean"):
        good = validated.where(F.col(S.REASON).isNull()).drop(S.RAW, S.REASON)
        events = clean.drop_exact_duplicates(good).persist(StorageLevel.MEMORY_AND_DISK)
        pairs = clean.to_pairs(events, p.event_weights, p.default_weight, w.method, has_time)
        abuse_events = 0
        if p.max_events_per_user_day is not None:
            bots = clean.abusive_users(events, p.max_events_per_user_day)
            pairs = pairs.join(bots.withColumn("_bot", F.lit(True)), S.USER_ID, "left")
            pairs = pairs.localCheckpoint()
            abuse_events = pairs.where(F.col("_bot")).agg(F.sum(S.N_EVENTS)).first()[0] or 0
            counts["abusive_users"] = pairs.where(F.col("_bot")).select(S.USER_ID).distinct().count()
            pairs = pairs.where(F.col("_bot").isNull()).drop("_bot")
        deduped_events = pairs.agg(F.sum(S.N_EVENTS)).first()[0] or 0
        exact_copies = good_rows - deduped_events - abuse_events
        disliked, below_events = None, 0
        if w.method == "value":
            pairs, cap = clean.transform_weights(pairs, w.cap_quantile, w.transform)
            m.data["weight_cap"] = cap
        elif w.method == "rating":  # below the threshold: seen, not a positive (nor in the k-core)
            pairs = pairs.withColumn("_pos", clean.rated_positive(w.threshold)).localCheckpoint()
            disliked = pairs.where(~F.col("_pos")).drop("_pos")
            pairs = pairs.where(F.col("_pos")).drop("_pos")
            below_events = disliked.agg(F.sum(S.N_EVENTS)).first()[0] or 0
        core, passes = clean.kcore(pairs, p.min_user_interactions, p.min_item_interactions)
        kcore_events = deduped_events - below_events - (core.agg(F.sum(S.N_EVENTS)).first()[0] or 0)
        cached.unpersist()
        events.unpersist()
        counts["kcore_passes"] = passes

    with m.timed("index"):
        # Ages and recencies are measured from the newest interaction, not the wall clock, so
        # re-running a snapshot gives the same features.
        if core.isEmpty():
            raise RejectShareError("no interactions are left after the k-core filter "
                                   f"(min_user_interactions={p.min_user_interactions}, "
                                   f"min_item_interactions={p.min_item_interactions})")
        if has_time:
            ref_ts = core.agg(F.max(S.TS).cast("long")).first()[0]
            m.data["snapshot_time"] = datetime.fromtimestamp(ref_ts, timezone.utc).isoformat()
        else:  # side tables' dates age from the end of the snapshot's day instead
            ref_ts = int(datetime.fromisoformat(m["ds"]).replace(tzinfo=timezone.utc).timestamp()) + 86400
            m.data["snapshot_time"] = None
        side = {}
        for name, side_cfg, key in (("users", cfg.users, S.USER_ID), ("items", cfg.items, S.ITEM_ID)):
            if side_cfg is not None:
                table = read_source(spark, side_cfg, all_strings=False, what=f"{name} side table")
                if erased is not None and name == "users":
                    require_columns(table, {"users.key": side_cfg.key}, "users side table")
                    table = privacy.without_users(table, erased, side_cfg.key)
                tags = None
                if side_cfg.tags is not None:
                    tags = read_source(spark, side_cfg.tags, all_strings=False, what="items.tags table")
                    require_columns(tags, {"items.tags.item": side_cfg.tags.item, "items.tags.tag": side_cfg.tags.tag,
                                           "items.tags.user": side_cfg.tags.user},
                                    f"items.tags table {side_cfg.tags.path or side_cfg.tags.table}")
                    if erased is not None and side_cfg.tags.user is not None:
                        tags = privacy.without_users(tags, erased, side_cfg.tags.user)
                side[name] = features.encode_side_table(table, side_cfg, key, ref_ts, tags)
        user_index = build_index(core, side.get("users", (None,))[0], S.USER_ID, S.USER_IDX)
        item_index = build_index(core, side.get("items", (None,))[0], S.ITEM_ID, S.ITEM_IDX)
        user_index, item_index = user_index.localCheckpoint(), item_index.localCheckpoint()
        indexed = apply_index(apply_index(core, user_index, S.USER_ID, S.USER_IDX),
                              item_index, S.ITEM_ID, S.ITEM_IDX).localCheckpoint()

    with m.timed("split"):
        method = p.split.method
        if method == "temporal":
            flagged, cutoff = split.temporal_split(indexed, p.split.valid_fraction)
            m.data["split_cutoff"] = datetime.fromtimestamp(cutoff, timezone.utc).isoformat()
        elif method == "leave_last":
            flagged = split.leave_last_split(indexed, p.split.valid_n, p.split.valid_fraction)
        else:
            flagged = split.random_split(indexed, p.split.valid_fraction, p.split.seed)
        flagged = split.restrict_to_known(flagged).localCheckpoint()
        parts = {(r["_valid"], r["_cold"]): (r["rows"], r["events"]) for r in
                 flagged.groupBy(split.VALID_FLAG, "_cold").agg(
                     F.count(F.lit(1)).alias("rows"), F.sum(S.N_EVENTS).alias("events")).collect()}
        train_rows, train_events = parts.get((False, False), (0, 0))
        valid_rows, valid_events = parts.get((True, False), (0, 0))
        cold_rows, cold_events = parts.get((True, True), (0, 0))
        if train_rows == 0 or valid_rows == 0:
            raise RejectShareError(f"the {method} split left {train_rows} train and {valid_rows} "
                                   "validation rows; the snapshot would be unusable")

    seen_rows = seen_events = 0
    if disliked is not None:  # kept for exclusion where both user and item are indexed
        seen = apply_index(apply_index(disliked, user_index, S.USER_ID, S.USER_IDX),
                           item_index, S.ITEM_ID, S.ITEM_IDX).localCheckpoint()
        seen_rows, seen_events = seen.agg(F.count(F.lit(1)), F.sum(S.N_EVENTS)).first()
        seen_events = seen_events or 0

    kept = train_rows + valid_rows
    merged = train_events + valid_events - kept + seen_events - seen_rows
    counts.update(
        deduplicated=exact_copies + merged,
        deduplicated_detail={"exact_copies": exact_copies, "merged_repeat_events": merged},
        filtered=abuse_events + kcore_events + cold_events + below_events - seen_events,
        filtered_detail={"abuse": abuse_events, "kcore": kcore_events,
                         "valid_unknown_user_or_item": cold_events,
                         "below_threshold_unknown_user_or_item": below_events - seen_events},
        kept=kept,
        seen_not_positive=seen_rows,
    )
    counts["balanced"] = (counts["kept"] + seen_rows + rejected + counts["deduplicated"]
                          + counts["filtered"]) == total

    with m.timed("write"):
        columns = [S.USER_IDX, S.ITEM_IDX, S.TS, S.WEIGHT, S.RECENCY] + ([S.VALUE] if cfg.input.columns.value else [])
        kept_rows = with_recency(flagged.where(~F.col("_cold")), has_time).localCheckpoint()
        train = kept_rows.where(~F.col(split.VALID_FLAG)).select(*columns)
        valid = kept_rows.where(F.col(split.VALID_FLAG)).select(*columns)
        write_parquet(train, join(staging, S.TRAIN), training_files(train_rows, p))
        write_parquet(valid, join(staging, S.VALID), training_files(valid_rows, p))
        hist = histories(kept_rows, p.history_len, split.VALID_FLAG,
                         None if has_time else p.split.seed).localCheckpoint()
        summary = hist.agg(F.count(F.lit(1)).alias("users"),
                           F.sum((F.col(S.HISTORY_DROPPED) > 0).cast("long")).alias("truncated_users"),
                           F.sum(S.HISTORY_DROPPED).alias("dropped_rows")).first().asDict()
        counts["histories"] = {"history_len": p.history_len, "users": summary["users"],
                               "truncated_users": summary["truncated_users"] or 0,
                               "rows_left_out": summary["dropped_rows"] or 0}
        write_parquet(hist, join(staging, S.HISTORIES), training_files(summary["users"], p))
        write_parquet(graph_edges(kept_rows, split.VALID_FLAG), join(staging, S.GRAPH),
                      training_files(kept, p))
        seen_cols = [S.USER_IDX, S.ITEM_IDX, S.TS, S.VALUE]
        seen_df = (seen.select(*seen_cols) if disliked is not None
                   else flagged.select(*seen_cols).limit(0))
        write_parquet(seen_df, join(staging, S.SEEN), 1 if seen_rows == 0 else training_files(seen_rows, p))
        rows = {S.TRAIN: train_rows, S.VALID: valid_rows, S.REJECTS: rejected,
                S.HISTORIES: summary["users"], S.SEEN: seen_rows, S.GRAPH: kept}
        store = Storage(spark)
        for name, index, key, idx, count_name in (
                (S.USERS, user_index, S.USER_ID, S.USER_IDX, "n_train"),
                (S.ITEMS, item_index, S.ITEM_ID, S.ITEM_IDX, "popularity")):
            side_df, side_meta = side.get(name, (None, None))
            table, meta = features.entity_features(
                train, index, side_df, side_meta, key=key, idx=idx,
                count_name=count_name, ref_ts=ref_ts)
            n = index.count()
            write_parquet(table, join(staging, name), math.ceil(n / p.max_rows_per_row_group))
            store.write_json(join(staging, name, S.FEATURES_META), meta)
            index_name = S.USER_INDEX if name == S.USERS else S.ITEM_INDEX
            write_parquet(index, join(staging, index_name), math.ceil(n / p.max_rows_per_row_group))
            rows[name] = rows[index_name] = n
        counts["rows"] = rows
        store.write_json(join(staging, S.COMPLETE_MARKER),
                         snapshot.marker(m["ds"], rows, m.data["snapshot_time"], p.history_len, has_time))
