"""The SparkSession: local defaults when started by `python`/`recsys`, the cluster's under spark-submit."""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from recsys.config import Config
from recsys.storage import is_local, local_path, resolve_root


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(cfg: Config) -> SparkSession:
    """Get or create the session for a job.

    Under spark-submit the master and memory come from the submit command; when this code
    starts Spark itself it uses `spark.master` and `spark.driver_memory` from the config.
    Locally the Hive catalogue is an embedded Derby database under `<root>/metastore_db`.
    """
    root = resolve_root(cfg.paths.root)
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    if not launched_by_spark_submit():
        builder = (builder.master(cfg.spark.master)
                   .config("spark.driver.memory", cfg.spark.driver_memory))
        # Python workers must use this interpreter (the venv), not the first python3 on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Unparsable timestamps become null (and are quarantined) instead of failing the job.
        "spark.sql.legacy.timeParserPolicy": "CORRECTED",
        "spark.ui.showConsoleProgress": "false",
    }
    if cfg.spark.hive and is_local(root):
        base = local_path(root)
        os.makedirs(base, exist_ok=True)
        settings.update({
            "spark.sql.catalogImplementation": "hive",
            "spark.hadoop.javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={base}/metastore_db;create=true",
            "spark.sql.warehouse.dir": f"{base}/warehouse",
            "spark.driver.extraJavaOptions": f"-Dderby.system.home={base}",
        })
    settings.update(cfg.spark.conf)
    submitted: set[str] = set()
    if launched_by_spark_submit():  # what spark-submit was given (--conf, --name) wins
        from pyspark import SparkConf, SparkContext
        SparkContext._ensure_initialized()
        submitted = {k for k, _ in SparkConf().getAll()}
    for key, value in settings.items():
        if key not in submitted:
            builder = builder.config(key, value)
    if cfg.spark.hive:
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
