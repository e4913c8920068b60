"""Airflow DAG ``recsys_nightly``: the nightly recsys pipeline as four spark-submit tasks.

    prepare >> train >> evaluate >> score

Each task runs ``spark-submit <RECSYS_HOME>/jobs/<step>.py --conf <RECSYS_CONF> --ds {{ ds }}``
through ``SparkSubmitOperator`` (``apache-airflow-providers-apache-spark``), so a run for the
logical date ``ds`` builds that day's snapshot, model, report and recommendation partition.
The jobs are idempotent per ds (outputs are published atomically, a re-run replaces them), which
is what makes the retries and a manual re-run of any day safe.

Schedule: ``@daily`` at 00:00 UTC, no catch-up, one run at a time. In Airflow 3 ``@daily`` is a
cron *trigger* timetable, so the run that starts at 2026-11-26T00:00 has ``ds`` 2026-11-26 (in
Airflow 2 it was the day before); ``[scheduler] create_cron_data_intervals = True`` restores the
Airflow 2 meaning if the snapshots should be named after the day that just ended.

This file is wiring only: it needs Airflow and the Spark provider and never imports ``recsys``
(the jobs run in Spark's Python, not in Airflow's; Airflow lives in a virtual environment of its
own, because the provider's ``pyspark-client`` 4.x would replace the project's pyspark 3.5).

Deploying
---------
1. Put the repository (or a release of it) where the Airflow workers can read it, and make this
   file visible in Airflow's dags folder, e.g. ``ln -s $RECSYS_HOME/jobs/dags/recsys_nightly.py
   $AIRFLOW_HOME/dags/``. A symlink keeps the default ``RECSYS_HOME`` right (it is the
   repository that holds the resolved file); a copy needs ``RECSYS_HOME`` set.
2. Define the Spark connection (default id ``spark_default``) with the cluster's master and deploy
   mode, e.g. ``AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "yarn",
   "extra": {"deploy-mode": "client"}}'``; ``spark-submit`` must be on the workers' PATH (or set
   ``spark-binary`` / ``spark-home`` in the connection's extra).
3. Ship the project's Python environment to the cluster: ``make dist`` writes
   ``dist/recsys-env.tar.gz`` (venv-pack); set ``RECSYS_ENV_ARCHIVE=dist/recsys-env.tar.gz`` and
   the tasks add ``--archives <it>#environment`` and
   ``spark.pyspark.python=./environment/bin/python``, so executors (and the driver in cluster
   deploy mode) run the packed interpreter with recsys installed. In client deploy mode the driver
   runs on the Airflow worker: set ``RECSYS_DRIVER_PYTHON`` to a Python there that has recsys
   installed (it becomes ``spark.pyspark.driver.python``). Without ``RECSYS_ENV_ARCHIVE`` the
   cluster's own Python must already have recsys and its pinned dependencies.

Settings (environment variables, read when the file is parsed, so set them alike for the DAG
processor and the workers; Airflow Variables are deliberately not read at parse time):

============================  =================================================================
``RECSYS_HOME``               the repository / deploy root holding ``jobs/`` and ``conf/``;
                              default: two levels above this file
``RECSYS_CONF``               the job configuration, relative to ``RECSYS_HOME`` or absolute;
                              default ``conf/cluster.yaml``. The jobs read it with ``open()`` on
                              the driver, so in cluster deploy mode it must be a path the driver
                              can read.
``RECSYS_SPARK_CONN_ID``      the Airflow connection for spark-submit; default ``spark_default``
``RECSYS_ENV_ARCHIVE``        optional venv-pack archive (relative to ``RECSYS_HOME``, absolute,
                              or a URI such as ``hdfs:///apps/recsys-env.tar.gz``)
``RECSYS_DRIVER_PYTHON``      optional driver interpreter for client deploy mode (see 3.)
============================  =================================================================
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, chain

STEPS = ("prepare", "train", "evaluate", "score")


def _under_home(home: str, path: str) -> str:
    """``path`` as given when absolute or a URI, else relative to ``home``."""
    if os.path.isabs(path) or "://" in path:
        return path
    return os.path.join(home, path)


RECSYS_HOME = os.environ.get("RECSYS_HOME") or str(Path(__file__).resolve().parents[2])
RECSYS_CONF = _under_home(RECSYS_HOME, os.environ.get("RECSYS_CONF") or "conf/cluster.yaml")
SPARK_CONN_ID = os.environ.get("RECSYS_SPARK_CONN_ID") or "spark_default"
ENV_ARCHIVE = os.environ.get("RECSYS_ENV_ARCHIVE")
DRIVER_PYTHON = os.environ.get("RECSYS_DRIVER_PYTHON")

SPARK_CONF: dict[str, str] = {}
ARCHIVES = None
if ENV_ARCHIVE:
    ARCHIVES = f"{_under_home(RECSYS_HOME, ENV_ARCHIVE)}#environment"
    SPARK_CONF["spark.pyspark.python"] = "./environment/bin/python"
if DRIVER_PYTHON:
    SPARK_CONF["spark.pyspark.driver.python"] = DRIVER_PYTHON

with DAG(
    dag_id="recsys_nightly",
    description="recsys: prepare -> train -> evaluate -> score, one spark-submit per step",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
    },
    tags=["recsys", "spark"],
    doc_md=__doc__,
) as dag:
    tasks = [
        SparkSubmitOperator(
            task_id=step,
            conn_id=SPARK_CONN_ID,
            application=os.path.join(RECSYS_HOME, "jobs", f"{step}.py"),
            application_args=["--conf", RECSYS_CONF, "--ds", "{{ ds }}"],
            name=f"recsys-{step}-{{{{ ds }}}}",
            conf=dict(SPARK_CONF) or None,
            archives=ARCHIVES,
        )
        for step in STEPS
    ]
    chain(*tasks)
