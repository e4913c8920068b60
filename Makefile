# Two commands do all set-up: `make demo` and `make test`. Both create .venv when needed and
# install the project with the pinned versions of .ci/constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DS ?= $(shell date -u +%F)
STAMP := $(VENV)/.installed

.PHONY: demo nightly test check-java install bench-prepare bench-score bench-train test-airflow dist clean

check-java:
	@command -v java >/dev/null 2>&1 || { echo "make: Java is missing: install Java 17 (Spark 3.5 needs a JVM; e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }

$(STAMP): pyproject.toml .ci/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c .ci/constraints.txt -e '.[test]'
	@touch $(STAMP)

install: check-java $(STAMP)

test: install
	$(PY) -m pytest -q -rs -p no:cacheprovider

# The whole night on the bundled MovieLens-100k, then one user's top 10 read back from the table.
demo: install
	$(VENV)/bin/recsys run --conf conf/movielens.yaml --ds $(DS)
	$(PY) -m recsys.demo --conf conf/movielens.yaml --ds $(DS)

# One night of the pipeline: make nightly DS=2026-11-25 [CONF=conf/movielens.yaml]
CONF ?= conf/movielens.yaml
nightly: install
	$(VENV)/bin/recsys run --conf $(CONF) --ds $(DS)

# Not part of `make test`: prepare on 1M and 10M synthetic events (several minutes).
bench-prepare: install
	$(PY) tests/benchmarks/bench_prepare.py --events 1000000 10000000

# Not part of `make test`: score 200k users x 20k items vs ALS recommendForAllUsers and torch.
bench-score: install
	$(PY) tests/benchmarks/bench_score.py

# Not part of `make test`: training samples/s per model, data wait, Petastorm vs raw Parquet
# (uses bench-prepare's 1M snapshot when there is one; several minutes).
bench-train: install
	$(PY) tests/benchmarks/bench_train.py

clean:
	rm -rf var .bench

# Airflow lives in a virtual environment of its own: apache-airflow-providers-apache-spark 6.x
# pulls pyspark-client 4.x, which would install its own `pyspark` over the project's pyspark 3.5.
# The DAG needs only Airflow and the provider, never recsys. Versions: .ci/airflow-constraints.txt.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

$(AIRFLOW_STAMP): .ci/airflow-constraints.txt
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -c .ci/airflow-constraints.txt \
		'apache-airflow==3.3.2' 'apache-airflow-providers-apache-spark>=6,<7' pytest
	@touch $(AIRFLOW_STAMP)

# The DAG (jobs/dags/recsys_nightly.py) loaded with Airflow's DagBag. --noconftest: tests/conftest.py
# imports recsys, which this environment does not (and must not) have; bin/pytest rather than
# `python -m pytest`, which would put the repository on sys.path and so make recsys importable.
test-airflow: $(AIRFLOW_STAMP)
	$(AIRFLOW_VENV)/bin/pytest -q -p no:cacheprovider --noconftest -rs tests/test_dag.py
