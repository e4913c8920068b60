"""The score step: load a model artifact, rank the catalogue for every user, publish one ds.

Refused before anything is written: a missing artifact or version, an artifact whose id maps
no longer match the snapshot's, a table name that is not a plain `db.table`.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import fsio, gate, privacy, snapshot, warehouse
from recsys import schema as S
from recsys.artifacts import WEIGHTS, Artifact, load_artifact, resolve_model
from recsys.config import Config, ItemListConfig, to_dict
from recsys.errors import MissingColumnError
from recsys.manifest import Manifest
from recsys.models import history_length, history_only, reads_history
from recsys.models.features import FeatureTable
from recsys.ranking import exposure
from recsys.ranking.topk import CAP_HEADROOM, cap_per_category
from recsys.score import writer
from recsys.score.reasons import REASONS
from recsys.score.scorer import (OPTED_OUT, OUTPUT_SCHEMA, POPULAR, SOURCES, Plan, score_and_write,
                                 score_partition)
from recsys.sources import read_list
from recsys.storage import Storage, join, resolve_root

log = logging.getLogger("recsys.score")


def _item_list(spark: SparkSession, cfg: ItemListConfig, item_ids: pd.Series, what: str) -> np.ndarray:
    """[n_items] bool: the catalogue items (`item_ids`, in item_idx order) the list names."""
    listed = [r[0] for r in read_list(spark, cfg, cfg.column, what).distinct().collect()]
    return item_ids.isin(listed).to_numpy()


def item_map(model_ids: pd.Series, current_ids: pd.Series) -> np.ndarray | None:
    """current item_idx -> the model's item_idx (-1 for an item the model never saw), or None
    when both snapshots number the same items the same way."""
    if len(model_ids) == len(current_ids) and (model_ids.to_numpy() == current_ids.to_numpy()).all():
        return None
    position = pd.Series(np.arange(len(model_ids)), index=model_ids.to_numpy())
    return position.reindex(current_ids.to_numpy()).fillna(-1).to_numpy(np.int64)


def build_plan(spark: SparkSession, cfg: Config, artifact: Artifact, snap: snapshot.Snapshot) -> Plan:
    s = cfg.score
    n_items = artifact.config["model"]["n_items"]
    # Small tables, read on the driver with pyarrow: a Spark job each would cost more.
    items = fsio.read_table(snap.dataset(S.ITEMS)).to_pandas().sort_values(S.ITEM_IDX)
    item_ids = snapshot.read_item_ids(snap)
    blocked = None
    for key, rule in (("allow_items", s.allow_items), ("block_items", s.block_items)):
        if rule is not None:
            listed = _item_list(spark, rule, item_ids, f"score.{key}")
            mask = ~listed if key == "allow_items" else listed
            blocked = mask if blocked is None else blocked | mask
    category = None
    if s.category_column is not None:
        if s.category_column not in items.columns:
            raise MissingColumnError(f"score.category_column {s.category_column!r} is not a column "
                                     f"of {snap.dataset(S.ITEMS)} (it has {', '.join(items.columns)})")
        category = items[s.category_column].to_numpy().astype(np.int64)
    popularity = items["popularity"].to_numpy().astype(np.float32)
    new = popularity == 0  # in the catalogue, never interacted with: only content can place them
    allow_new = s.new_items and content_aware(artifact.config["model"])
    if new.any() and not allow_new:
        blocked = new if blocked is None else blocked | new
    order = np.lexsort((np.arange(n_items), -popularity))
    if blocked is not None:
        order = order[~blocked[order]]
    pop_items = order[: CAP_HEADROOM * s.top_n]
    pop_scores = popularity[pop_items]
    if category is not None:
        it, sc = cap_per_category(torch.as_tensor(pop_items)[None], torch.as_tensor(pop_scores)[None],
                                  torch.as_tensor(category), s.max_per_category, s.top_n)
        pop_items, pop_scores = it[0].numpy(), sc[0].numpy()
    keep = np.isfinite(pop_scores[: s.top_n])
    return Plan(
        version=artifact.version, model=artifact.config["model"],
        weights=fsio.read_bytes(join(artifact.path, WEIGHTS)), item_ids=item_ids.tolist(),
        top_n=s.top_n, candidates=max(s.candidates, s.top_n), blocked=blocked, category=category,
        cap=s.max_per_category, popular=pop_items[: s.top_n][keep],
        popular_scores=pop_scores[: s.top_n][keep], batch_cells=s.batch_cells,
        max_len=history_length(artifact.config["model"]),
        new_items=new if allow_new else None, new_slots=round(s.new_item_share * s.top_n) if allow_new else 0,
        new_total=int(new.sum()), reasons=s.reasons, reason_history=s.reason_history)


def content_aware(spec: dict) -> bool:
    """Whether the model places an item from its side features alone (new items)."""
    if spec["model"] == "blend":
        return False  # a blend's other members know nothing of new items
    f = spec.get("item_features")  # two_tower, or a sequence model with train.item_content
    return bool(f) and FeatureTable.has_content(f)


def users_to_score(spark: SparkSession, cfg: Config, snap: snapshot.Snapshot, has_towers: bool,
                   parts: int, with_time: bool = False, erased: DataFrame | None = None,
                   opted_out: DataFrame | None = None) -> DataFrame:
    """The scorer's input (see scorer.py), hash-partitioned by user into `parts` partitions:
    a row (user_idx, user_id, source) per user to score and a row (user_idx, item_idx[, ts])
    per item of their history (`with_time`: history models read it in time order). The scorer
    groups the history itself: one shuffle, where a collect_list per user and a join cost
    three (and twice the time, bench-score). `erased` users are not scored; `opted_out` ones
    get the popularity list."""
    s = cfg.score
    index = spark.read.parquet(snap.dataset(S.USER_INDEX))
    feats = spark.read.parquet(snap.dataset(S.USERS)).select(S.USER_IDX, "n_train", "recency_days")
    users = index.join(feats, S.USER_IDX, "left")
    if s.users_table is not None:
        wanted = spark.table(s.users_table)
        if S.USER_ID not in wanted.columns:
            raise MissingColumnError(f"score.users_table {s.users_table} has no {S.USER_ID} column")
        users = users.join(wanted.select(F.col(S.USER_ID).cast("string")).distinct(), S.USER_ID)
    if s.active_days is not None:
        users = users.where(F.col("recency_days") <= s.active_days)
    chosen = s.users_table is not None or s.active_days is not None
    if erased is not None:
        users, chosen = privacy.without_users(users, erased, S.USER_ID), True
    opted = F.lit(False)
    if opted_out is not None:
        users = users.join(opted_out.withColumn("_opted_out", F.lit(True)), S.USER_ID, "left")
        opted = F.coalesce(F.col("_opted_out"), F.lit(False))
    cols = [S.USER_IDX, S.ITEM_IDX] + ([F.col(S.TS).cast("long").alias(S.TS)] if with_time else [])
    history = (spark.read.parquet(snap.dataset(S.TRAIN)).select(*cols)
               .unionByName(spark.read.parquet(snap.dataset(S.VALID)).select(*cols)))
    disliked = snap.rows.get(S.SEEN, 0) > 0  # seen, not positives: excluded, never history
    if disliked:
        history = (history.withColumn("disliked", F.lit(False))
                   .unionByName(spark.read.parquet(snap.dataset(S.SEEN)).select(*cols)
                                .withColumn("disliked", F.lit(True))))
    if chosen:  # only the chosen users' history
        history = history.join(users.select(S.USER_IDX), S.USER_IDX, "left_semi")
    trained = F.coalesce(F.col("n_train"), F.lit(0)) > 0
    source = (F.when(opted, F.lit(OPTED_OUT)).when(trained, F.lit("model"))
              .when(F.lit(has_towers), F.lit("features")).otherwise(F.lit(POPULAR)))
    no_string, no_item = F.lit(None).cast("string"), F.lit(None).cast("int")
    no_time = [F.lit(None).cast("long").alias(S.TS)] if with_time else []
    no_flag = [F.lit(None).cast("boolean").alias("disliked")] if disliked else []
    rows = users.select(S.USER_IDX, S.USER_ID, source.alias("source"), no_item.alias(S.ITEM_IDX),
                        *no_time, *no_flag)
    rows = rows.unionByName(history.select(S.USER_IDX, no_string.alias(S.USER_ID),
                                           no_string.alias("source"), S.ITEM_IDX, *([S.TS] if with_time else []),
                                           *(["disliked"] if disliked else [])))
    return rows.repartition(parts, S.USER_IDX)


def table_exposure(spark: SparkSession, table: str, ds: str, n_items: int, top_n: int) -> dict:
    """Coverage and exposure concentration of the whole published partition (every user's
    list, not the evaluation's sample): slots per item, then a histogram of those counts, the
    only thing collected (its size is the number of distinct counts, not the catalogue)."""
    per_item = spark.table(table).where(F.col("ds") == ds).groupBy(S.ITEM_ID).count()
    hist = per_item.groupBy("count").agg(F.count(F.lit(1)).alias("items")).collect()
    values = np.array([r["count"] for r in hist], np.int64)
    items = np.array([r["items"] for r in hist], np.int64)
    return exposure.from_histogram(values, items, n_items, top_n)


def _partitions(spark: SparkSession, n_users: int, n_pairs: int) -> int:
    """At least one task per core; at most 50k users and 5M history rows per task (a Python
    worker holds its task's input)."""
    return max(spark.sparkContext.defaultParallelism, -(-n_users // 50_000), -(-n_pairs // 5_000_000))


def write_with_arrow(spark: SparkSession, cfg: Config, ds: str, users: DataFrame, bc: Any,
                     artifact: Artifact) -> tuple[dict, dict]:
    """The Python workers write the files; then commit them and the partition."""
    staged = warehouse.stage_partition(spark, cfg.score.table, ds)
    directory = staged.location
    writer.check_reachable(directory)
    summaries = [r.asDict() for r in users.mapInArrow(
        lambda batches: score_and_write(bc, directory, batches), writer.SUMMARY_SCHEMA).collect()]
    files = writer.commit_files(Storage(spark), directory, summaries)
    return warehouse.commit_partition(spark, staged, files["rows"]), files["users_by_source"]


def write_with_spark(spark: SparkSession, cfg: Config, ds: str, users: DataFrame, bc: Any,
                     artifact: Artifact) -> tuple[dict, dict]:
    """The ranked rows go back to the JVM and Spark's Parquet writer."""
    users = users.localCheckpoint()  # counted, then scored: read once
    by_source = {r["source"]: r["count"] for r in
                 users.where(F.col(S.ITEM_IDX).isNull()).groupBy("source").count().collect()}
    ranked = users.mapInArrow(lambda batches: score_partition(bc, batches), OUTPUT_SCHEMA)
    ranked = ranked.select(
        "user_id", "item_id", "rank", "score",
        F.element_at(F.array(*[F.lit(x) for x in SOURCES]),
                     F.col("source_code").cast("int") + 1).alias("source"),
        F.lit(artifact.version).alias("model_version"), "because_item_id",
        F.element_at(F.array(*[F.lit(x) for x in REASONS]),
                     F.col("reason_code").cast("int") + 1).alias("reason"))
    return warehouse.publish_partition(spark, cfg.score.table, ds, ranked), by_source


def score(spark: SparkSession, cfg: Config, ds: str, *, version: str | None = None,
          force: bool = False) -> Manifest:
    """Score users with the artifact `version` (default: latest) and publish partition `ds`,
    if it passes the publish gate (or `force`)."""
    s = cfg.score
    root = resolve_root(cfg.paths.root)
    m = Manifest("score", ds, to_dict(cfg))
    store = Storage(spark)
    with m.recorded(lambda data: store.write_json(join(root, "runs", ds, "score.json"), data)):
        warehouse.check_table_name(s.table)
        name, selected = resolve_model(root, s.model or cfg.train.model)
        artifact = load_artifact(root, name, version or selected)
        # Its counts as training saw them (`seen` among them), without reading its marker again.
        model_snap = snapshot.Snapshot(artifact.data["snapshot"], {"rows": artifact.data.get("rows", {})})
        spec = artifact.config["model"]
        # A history model reads users from their history as of this ds, whichever snapshot it
        # was trained on; a table model can only score the users of its own snapshot.
        snap = model_snap
        current = snapshot.snapshot_path(root, cfg.dataset, ds)
        if history_only(spec) and current != model_snap.path and fsio.exists(join(current, S.COMPLETE_MARKER)):
            snap = snapshot.at(current)
        m.data["inputs"] = {"model": name, "version": artifact.version, "artifact": artifact.path,
                            "snapshot": model_snap.path, "model_ds": artifact.data["ds"],
                            "histories_from": snap.path}
        with m.timed("check"):
            with ThreadPoolExecutor(1) as pool:
                # On a fresh driver the metastore client's start and the first Spark job each
                # take seconds of mostly one core (bench-score): run them side by side.
                published = pool.submit(warehouse.published_version, spark, s.table) if s.gate.enabled else None
                snapshot.check_id_maps(spark, artifact.data, artifact.version)
                published_version = published.result() if published is not None else None
            if s.gate.enabled:
                try:
                    verdict = gate.check(root, ds, s.gate, artifact, published_version)
                except gate.GateError as exc:  # nothing to judge by: --force still publishes
                    if not force:
                        raise
                    verdict = gate.Verdict(False, str(exc))
                m.data["gate"] = {"passed": verdict.passed, "message": verdict.message, **verdict.numbers}
                if not verdict.passed and not force:
                    raise gate.GateError(f"not published: {verdict.message}; the table keeps its "
                                         f"current partitions (--force publishes anyway)")
                if not verdict.passed:
                    log.warning("publishing despite the gate (--force): %s", verdict.message)
            m.data["forced"] = force
        with m.timed("plan"):
            plan = build_plan(spark, cfg, artifact, model_snap)
            if snap is not model_snap:
                plan.item_map = item_map(pd.Series(plan.item_ids), snapshot.read_item_ids(snap))
            rows = snap.rows or artifact.data.get("rows", {})  # upper bounds of what is read
            parts = _partitions(spark, rows.get(S.USER_INDEX, artifact.config["model"]["n_users"]),
                                rows.get(S.TRAIN, 0) + rows.get(S.VALID, 0))
            p = cfg.privacy
            erased = privacy.read_users(spark, p.erase, "privacy.erase") if p.erase is not None else None
            opted_out = privacy.read_users(spark, p.opt_out, "privacy.opt_out") if p.opt_out is not None else None
            # Reasons name one of the user's newest items: the history is read in time order.
            users = users_to_score(spark, cfg, snap, artifact.config["model"]["model"] == "two_tower", parts,
                                   with_time=reads_history(spec) or s.reasons, erased=erased,
                                   opted_out=opted_out)
        with m.timed("score_and_write"):
            bc = spark.sparkContext.broadcast(plan)
            write = write_with_arrow if s.writer == "arrow" else write_with_spark
            published, by_source = write(spark, cfg, ds, users, bc, artifact)
            bc.unpersist()
        n_users = sum(by_source.values())
        with m.timed("retention"):
            dropped = warehouse.drop_expired(spark, s.table, ds, s.retention_days)
        if s.table_exposure:  # what the catalogue owner asks first, of the table as published
            with m.timed("exposure"):
                m.data["table_exposure"] = table_exposure(spark, s.table, ds, len(plan.item_ids), s.top_n)
        erasure = None
        if erased is not None:  # the retained partitions, each rewritten without them
            with m.timed("erase"):
                erasure = privacy.erase_from_table(spark, s.table, erased)
        m.data["outputs"] = {"table": s.table, "partition": f"ds={ds}", "location": published["location"],
                             "dropped_partitions": dropped}
        m.data["counts"] = {"users_scored": n_users, "users_by_source": by_source,
                            "new_items": {"in_catalogue": plan.new_total,
                                          "recommendable": plan.new_items is not None,
                                          "reserved_slots": plan.new_slots},
                            "rows_written": published["rows"], "model_version": artifact.version,
                            **({"erasure": erasure} if erasure is not None else {}),
                            # the whole job (checks, plan, publish) and its scoring + writing stage
                            "users_per_s": round(n_users / m.elapsed(), 1),
                            "users_per_s_scoring": round(n_users / max(m["timings_s"]["score_and_write"], 1e-9), 1)}
    return m
