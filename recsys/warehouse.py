"""The recommendations table in the Spark catalogue, and how a day's partition is published.

A partition is published by swapping its location in the metastore: the rows are written to a
new directory (`<table>/_versions/ds=<ds>/<run>`), then `ALTER TABLE ... PARTITION SET LOCATION`
points the partition at it in one metastore operation. Until then readers see yesterday's data
(or, for a new ds, no partition); a failed write leaves only an unreferenced directory, which the
next run of that ds removes. Re-running a ds replaces its partition, never appends to it.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from recsys.config import TABLE_NAME
from recsys.errors import ConfigError
from recsys.storage import Storage, join, normal_path

log = logging.getLogger("recsys.warehouse")
COLUMNS = ("user_id string, item_id string, rank int, score float, source string, "
           "model_version string, because_item_id string, reason string, ds string")
COLUMN_NAMES = [c.split()[0] for c in COLUMNS.split(", ") if not c.startswith("ds ")]
VERSIONS = "_versions"


def check_table_name(table: str) -> str:
    """Only `db.table` made of letters, digits and underscores: it is spliced into SQL."""
    if not TABLE_NAME.match(table):
        raise ConfigError(f"table name must be a plain db.table identifier, got {table!r}")
    return table


def ensure_table(spark: SparkSession, table: str) -> None:
    """Create the table, or add the columns a newer release writes to one created earlier
    (older partitions read them as null)."""
    check_table_name(table)
    db = table.split(".")[0]
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({COLUMNS}) USING parquet PARTITIONED BY (ds)")
    have = set(spark.table(table).columns)
    missing = [c for c in COLUMNS.split(", ") if c.split()[0] not in have]
    if missing:
        log.info("adding columns to %s: %s", table, ", ".join(missing))
        spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({', '.join(missing)})")


def table_location(spark: SparkSession, table: str) -> str:
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect()
    return next(r.data_type for r in rows if r.col_name == "Location")


def partition_location(spark: SparkSession, table: str, ds: str) -> str | None:
    if ds not in partitions(spark, table):
        return None
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table} PARTITION (ds='{ds}')").collect()
    return next((r.data_type for r in rows if r.col_name == "Location"), None)


def partitions(spark: SparkSession, table: str) -> list[str]:
    return sorted(r[0].split("=", 1)[1] for r in spark.sql(f"SHOW PARTITIONS {table}").collect())


def published_version(spark: SparkSession, table: str) -> str | None:
    """The model version behind the newest partition of `table`, if it has one."""
    db, name = check_table_name(table).split(".")
    if not spark.catalog.tableExists(f"{db}.{name}"):
        return None
    parts = partitions(spark, table)
    if not parts:
        return None
    row = spark.sql(f"SELECT model_version FROM {table} WHERE ds = '{parts[-1]}' LIMIT 1").first()
    return row[0] if row else None


@dataclass
class Staged:
    """A run directory for partition `ds`, not referenced by the table until committed."""
    table: str
    ds: str
    location: str
    previous: str | None  # the partition's current location, if it has one


def stage_partition(spark: SparkSession, table: str, ds: str) -> Staged:
    """Create the table if needed, remove what failed runs of this ds left, pick a new run
    directory (`<table>/_versions/ds=<ds>/<run>`)."""
    _check_ds(ds)
    ensure_table(spark, table)
    store = Storage(spark)
    base = join(table_location(spark, table), VERSIONS, f"ds={ds}")
    previous = partition_location(spark, table, ds)
    for leftover in store.list(base):  # failed runs of this ds; never the live location
        path = join(base, leftover)
        if previous is None or normal_path(previous) != normal_path(path):
            store.delete(path)
    return Staged(table, ds, join(base, uuid.uuid4().hex[:12]), previous)


def commit_partition(spark: SparkSession, staged: Staged, rows: int) -> dict[str, Any]:
    """Point partition `ds` at the complete run directory, in one metastore operation."""
    table, ds, target, previous = staged.table, staged.ds, staged.location, staged.previous
    if previous is None:
        spark.sql(f"ALTER TABLE {table} ADD PARTITION (ds='{ds}') LOCATION '{target}'")
    else:
        spark.sql(f"ALTER TABLE {table} PARTITION (ds='{ds}') SET LOCATION '{target}'")
        if f"/{VERSIONS}/" in previous:  # ours: nothing references it any more
            Storage(spark).delete(previous)
    spark.sql(f"REFRESH TABLE {table}")
    log.info("published %s partition ds=%s: %d rows at %s", table, ds, rows, target)
    return {"rows": rows, "location": target, "replaced": previous}


def publish_partition(spark: SparkSession, table: str, ds: str, rows: DataFrame) -> dict[str, Any]:
    """Write `rows` (the table's columns but ds) with Spark's writer and make them partition
    `ds`, atomically."""
    staged = stage_partition(spark, table, ds)
    rows.select(*COLUMN_NAMES).write.mode("error").parquet(staged.location)
    return commit_partition(spark, staged, spark.read.parquet(staged.location).count())


def drop_expired(spark: SparkSession, table: str, ds: str, retention_days: int) -> list[str]:
    """Drop partitions more than `retention_days` older than `ds`, data included."""
    cutoff = (date.fromisoformat(ds) - timedelta(days=retention_days)).isoformat()
    store = Storage(spark)
    dropped = []
    for old in partitions(spark, table):
        if old < cutoff:
            location = partition_location(spark, table, old)
            spark.sql(f"ALTER TABLE {table} DROP IF EXISTS PARTITION (ds='{old}')")
            if location:
                store.delete(location)
            dropped.append(old)
    return dropped


def _check_ds(ds: str) -> None:
    try:
        date.fromisoformat(ds)
    except ValueError:
        raise ConfigError(f"ds must be YYYY-MM-DD, got {ds!r}") from None
