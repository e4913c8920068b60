"""Erasure and opt-out: users whose data must go, and users who want no personalisation.

Both lists are tables of user ids as privacy teams keep them (`privacy.erase`,
`privacy.opt_out`: a file or a catalogue table, the id in `column`; other columns, such as the
date of the request, are kept by the team and ignored here).

An erased user is gone from the next run on:
- prepare leaves their rows out of the log before anything is written (`flag_erased`: their
  rows, and malformed lines that name them, get the reason `erased`, are counted, and are
  neither quarantined nor kept), and out of the users side table and the tag table;
- then every other snapshot of the dataset whose user index holds one of them is deleted, with
  the model artifacts and training runs built on it (`purge_held`): a model trained on their
  events is not kept, whatever its kind;
- the score job rewrites each retained partition of the table that holds one of them, without
  their rows, and publishes it as it publishes a day (`erase_from_table`).
An opted-out user is scored with the non-personalised list, `source = opted_out`.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import fsio, warehouse
from recsys import schema as S
from recsys.artifacts import LATEST, versions
from recsys.config import UserListConfig
from recsys.sources import read_list
from recsys.storage import Storage, join, normal_path

log = logging.getLogger("recsys.privacy")
# A malformed line's text is searched for listed ids among its tokens (CSV, TSV, JSON lines).
TOKENS = r"[\s,;|\"'{}\[\]:=]+"
_ID = "_listed_id"


def read_users(spark: SparkSession, cfg: UserListConfig, what: str) -> DataFrame:
    """The listed user ids: one column `user_id` (string, trimmed, distinct, no blanks)."""
    ids = F.trim(F.col(cfg.column))
    return read_list(spark, cfg, cfg.column, what).select(ids.alias(S.USER_ID)).where(
        F.col(S.USER_ID) != "").distinct()


def without_users(df: DataFrame, users: DataFrame, column: str) -> DataFrame:
    """`df` without the rows whose `column` names a listed user."""
    ids = users.select(F.col(S.USER_ID).alias(_ID))
    return df.join(ids, F.trim(F.col(column).cast("string")) == F.col(_ID), "left_anti")


def flag_erased(validated: DataFrame, users: DataFrame) -> DataFrame:
    """The validated log (clean.validate's columns) with the rows of listed users given the
    reason `erased` and no raw text: rows whose user id is listed, and rejected rows whose raw
    text names a listed id among its tokens (a malformed line may not parse into a user)."""
    ids = users.select(F.col(S.USER_ID).alias(_ID))
    named = (validated.join(ids.withColumn("_by_id", F.lit(True)), F.col(S.USER_ID) == F.col(_ID), "left")
             .drop(_ID))
    rejected = named.where(F.col(S.RAW).isNotNull() & F.col("_by_id").isNull()).select(S.RAW).distinct()
    tokens = rejected.select(S.RAW, F.explode(F.split(S.RAW, TOKENS)).alias("_token"))
    by_text = (tokens.join(ids, F.col("_token") == F.col(_ID), "left_semi").select(S.RAW).distinct()
               .withColumn("_by_text", F.lit(True)))
    flagged = named.join(by_text, S.RAW, "left")
    erased = F.coalesce(F.col("_by_id"), F.col("_by_text"), F.lit(False))
    return flagged.select(
        *[c for c in validated.columns if c not in (S.RAW, S.REASON)],
        F.when(erased, None).otherwise(F.col(S.RAW)).alias(S.RAW),
        F.when(erased, F.lit(S.ERASED)).otherwise(F.col(S.REASON)).alias(S.REASON))


def holds(spark: SparkSession, snapshot: str, users: DataFrame) -> bool:
    """Whether the snapshot's user index names a listed user."""
    index = spark.read.parquet(join(snapshot, S.USER_INDEX))
    return not index.join(users, S.USER_ID, "left_semi").isEmpty()


def purge_held(spark: SparkSession, root: str, dataset: str, keep: str, users: DataFrame) -> dict[str, list[str]]:
    """Delete every snapshot of `dataset` but `keep` that holds a listed user, and the model
    artifacts and training runs built on them; `latest` pointers move to the newest version
    left (or go). Returns what was deleted."""
    store = Storage(spark)
    base = join(root, "data", dataset)
    held = []
    for name in store.list(base):
        path = join(base, name)
        if name.startswith("ds=") and normal_path(path) != normal_path(keep) \
                and fsio.exists(join(path, S.COMPLETE_MARKER)) and holds(spark, path, users):
            held.append(path)
    artifacts, runs = _purge_models(root, held)
    for path in held:
        store.delete(path)
        log.warning("erasure: deleted snapshot %s (it held erased users)", path)
    return {"snapshots": held, "artifacts": artifacts, "training_runs": runs}


def _purge_models(root: str, snapshots: list[str]) -> tuple[list[str], list[str]]:
    """The artifacts trained on `snapshots` and the training runs (checkpoints) of their ds."""
    gone_ds = {p.rstrip("/").rsplit("ds=", 1)[1] for p in snapshots}
    gone = {normal_path(p) for p in snapshots}
    models = join(root, "models")
    artifacts, runs = [], []
    for model in fsio.listdir(models):
        if model.startswith((".", "_")):  # _selection names versions, holds no weights
            continue
        base = join(models, model)
        for ds in fsio.listdir(join(base, "_runs")):
            if ds in gone_ds:
                fsio.delete_dir(join(base, "_runs", ds))
                runs.append(join(base, "_runs", ds))
        kept = []
        for version in versions(root, model):
            data = json.loads(fsio.read_bytes(join(base, version, "data.json")))
            if normal_path(data.get("snapshot", "")) in gone:
                fsio.delete_dir(join(base, version))
                artifacts.append(join(base, version))
                log.warning("erasure: deleted model artifact %s (trained on a snapshot with erased users)",
                            join(base, version))
            else:
                kept.append(version)
        pointer = join(base, LATEST)
        if fsio.exists(pointer) and fsio.read_bytes(pointer).decode().strip() not in kept:
            if kept:
                fsio.write_bytes(pointer, sorted(kept)[-1].encode())
            else:
                fsio.delete_file(pointer)
    return artifacts, runs


def erase_from_table(spark: SparkSession, table: str, users: DataFrame) -> dict[str, Any]:
    """Rewrite each partition of `table` that holds a listed user without their rows, and
    publish it in place of the old one (warehouse.publish_partition: atomic per partition)."""
    rows = spark.table(table)
    hit = {r[0]: r[1] for r in rows.join(users, S.USER_ID, "left_semi").groupBy("ds").count().collect()}
    for ds in sorted(hit):
        kept = without_users(rows.where(F.col("ds") == ds), users, S.USER_ID)
        warehouse.publish_partition(spark, table, ds, kept.localCheckpoint())
        log.warning("erasure: rewrote %s partition ds=%s without %d rows of erased users", table, ds, hit[ds])
    return {"partitions_rewritten": sorted(hit), "rows_removed": sum(hit.values())}
