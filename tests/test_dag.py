"""The Airflow DAG `jobs/dags/recsys_nightly.py`, loaded with Airflow's own DagBag.

Airflow has a virtual environment of its own (its Spark provider pulls pyspark-client 4.x, which
would replace the project's pyspark 3.5), so this module runs under `make test-airflow`; in
`make test`, where Airflow is absent, it is reported as skipped with the reason below.
"""
from __future__ import annotations

import ast
import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

if importlib.util.find_spec("airflow") is not None:
    # Before Airflow is first imported: a throwaway AIRFLOW_HOME (parsing needs no metadata DB)
    # and no example DAGs, whatever the developer's own Airflow settings are.
    _home = tempfile.mkdtemp(prefix="recsys-airflow-home-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"

airflow = pytest.importorskip("airflow", reason="Airflow is not installed here; run `make test-airflow`")

from airflow.models import DagBag  # noqa: E402
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "jobs" / "dags"
DAG_FILE = DAGS / "recsys_nightly.py"
DAG_ID = "recsys_nightly"
STEPS = ["prepare", "train", "evaluate", "score"]
SETTINGS = ("RECSYS_HOME", "RECSYS_CONF", "RECSYS_SPARK_CONN_ID", "RECSYS_ENV_ARCHIVE",
            "RECSYS_DRIVER_PYTHON")


def load_dag(monkeypatch, **env: str):
    """Parse the dags folder the way Airflow's DAG processor does, with only `env` set."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    kwargs = {"include_examples": False} if "include_examples" in DagBag.__init__.__code__.co_varnames else {}
    bag = DagBag(dag_folder=str(DAGS), **kwargs)
    assert bag.import_errors == {}
    assert list(bag.dags) == [DAG_ID]
    return bag.dags[DAG_ID]


def test_dag_tasks_order_retries_and_schedule(monkeypatch):
    dag = load_dag(monkeypatch)

    assert dag.schedule == "@daily"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.start_date is not None and dag.start_date.year <= 2026
    assert "recsys" in dag.tags

    assert [t.task_id for t in dag.topological_sort()] == STEPS
    assert sorted(dag.task_ids) == sorted(STEPS)
    for before, after in zip(STEPS, STEPS[1:]):
        assert dag.get_task(before).downstream_task_ids == {after}
        assert dag.get_task(after).upstream_task_ids == {before}
    assert dag.get_task(STEPS[0]).upstream_task_ids == set()
    assert dag.get_task(STEPS[-1]).downstream_task_ids == set()

    conf = str(REPO / "conf" / "cluster.yaml")
    for step in STEPS:
        task = dag.get_task(step)
        assert isinstance(task, SparkSubmitOperator)
        assert task.application == str(REPO / "jobs" / f"{step}.py")
        assert Path(task.application).is_file() or step == "evaluate"  # evaluate is being written
        assert task.application_args == ["--conf", conf, "--ds", "{{ ds }}"]
        assert "{{ ds }}" in task.name
        assert task.retries == 2
        assert task.retry_delay.total_seconds() > 0
        assert task._conn_id == "spark_default"
        assert task._archives is None and not task.conf  # no packed environment unless asked


def test_dag_settings_from_the_environment(monkeypatch, tmp_path):
    dag = load_dag(monkeypatch, RECSYS_HOME=str(tmp_path), RECSYS_CONF="conf/prod.yaml",
                   RECSYS_SPARK_CONN_ID="spark_yarn", RECSYS_ENV_ARCHIVE="dist/recsys-env.tar.gz")
    for step in STEPS:
        task = dag.get_task(step)
        assert task.application == str(tmp_path / "jobs" / f"{step}.py")
        assert task.application_args == ["--conf", str(tmp_path / "conf" / "prod.yaml"), "--ds", "{{ ds }}"]
        assert task._conn_id == "spark_yarn"
        assert task._archives == f"{tmp_path}/dist/recsys-env.tar.gz#environment"
        assert task.conf == {"spark.pyspark.python": "./environment/bin/python"}

    # A URI or absolute path is taken as given.
    dag = load_dag(monkeypatch, RECSYS_CONF="/etc/recsys/prod.yaml",
                   RECSYS_ENV_ARCHIVE="hdfs:///apps/recsys-env.tar.gz", RECSYS_DRIVER_PYTHON="/opt/recsys/bin/python")
    task = dag.get_task("score")
    assert task.application_args[:2] == ["--conf", "/etc/recsys/prod.yaml"]
    assert task._archives == "hdfs:///apps/recsys-env.tar.gz#environment"
    assert task.conf == {"spark.pyspark.python": "./environment/bin/python",
                         "spark.pyspark.driver.python": "/opt/recsys/bin/python"}


def test_dag_file_never_imports_recsys():
    tree = ast.parse(DAG_FILE.read_text(), filename=str(DAG_FILE))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert imported, "the AST walk found no imports at all"
    assert not [m for m in imported if m == "recsys" or m.startswith("recsys.")]
