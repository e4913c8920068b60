# Two commands do all set-up: `make demo` and `make test`. Both create .venv when needed and
# install the project with the pinned versions of .ci/constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DS ?= $(shell date -u +%F)
STAMP := $(VENV)/.installed

.PHONY: demo nightly test check-java install bench-prepare bench-score bench-score-large bench-score-blend bench-score-reasons bench-train bench-train-scale bench-graph-step bench-exchange bench-quality test-airflow dist clean

check-java:
	@command -v java >/dev/null 2>&1 || { echo "make: Java is missing: install Java 17 (Spark 3.5 needs a JVM; e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }

$(STAMP): pyproject.toml .ci/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c .ci/constraints.txt -e '.[test]'
	@touch $(STAMP)

install: check-java $(STAMP)

# tests/test_cluster.py submits the nightly run to a standalone Spark on 127.0.0.1 with dist/'s
# packed environment, so the test run builds dist first (1-3 min from nothing, nothing when current).
test: install dist
	$(PY) -m pytest -q -rs -p no:cacheprovider --durations=15

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

# Not part of `make test`: the score job alone at 1M users x 100k items (about 10 minutes):
# peak memory, and cost per user x item against bench-score's last run.
bench-score-large: install
	$(PY) tests/benchmarks/bench_score.py --large

# Not part of `make test`: two mf artifacts scored alone and blended (200k users x 20k items);
# the blend's scoring stage against the sum of its members'.
bench-score-blend: install
	$(PY) tests/benchmarks/bench_score.py --blend

# Not part of `make test`: the score job with and without score.reasons (200k users x 20k
# items, interleaved runs); the stage's cost with reasons against without (goal <= 1.3x).
bench-score-reasons: install
	$(PY) tests/benchmarks/bench_score.py --reasons

# Not part of `make test`: training samples/s per model, data wait, Petastorm vs raw Parquet
# (uses bench-prepare's 1M snapshot when there is one; several minutes).
bench-train: install
	$(PY) tests/benchmarks/bench_train.py

# Not part of `make test`: synth logs at 25k x 2.5k, 250k x 25k and 1M x 100k (users x items),
# prepared, and one epoch of each model at each size (about 30 minutes; the logs are kept).
# Validation scores 500 users: neumf scores every user x item pair with its network.
bench-train-scale: install
	$(PY) tests/benchmarks/bench_train_scale.py --baseline --set train.eval_users=500

# One lightgcn step with users, positives and negatives expanded together against separately
# (needs bench-train-scale's snapshots; under a minute).
bench-graph-step: install
	$(PY) tests/benchmarks/bench_graph_step.py

# Not part of `make test`: the collectives of a replicated step (touched rows all-gathered, or
# the same bytes by one all-to-all as train/sparse.py does) against a row-sharded one
# (all-to-alls), same rows, 2 Gloo workers (about a minute).
bench-exchange: install
	$(PY) tests/benchmarks/bench_exchange.py

# Not part of `make test`: each user's newest 20% of MovieLens-100k cut before the pipeline sees
# the log; the published table of each model (and of the night's own choice) scored against the
# cut rows beside Spark ALS, EASE and popularity tuned on them; then a log without time (20% cut
# at random) and new items (cold against warm recall@50). About 80 minutes.
bench-quality: install
	$(PY) tests/benchmarks/bench_quality.py
	$(PY) tests/benchmarks/bench_quality.py --protocol random --models night,lightgcn --root .bench/quality-random
	$(PY) tests/benchmarks/bench_quality.py --protocol cold --models two_tower,gru4rec --root .bench/quality-cold

clean:
	rm -rf var .bench dist build

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

# What spark-submit needs on a cluster (see "Running on a cluster" in the README):
#   dist/recsys-<version>-py3-none-any.whl   the library
#   dist/jobs/, dist/conf/                   the entry points and configurations to submit
#   dist/recsys-env.tar.gz                   a packed Python environment (venv-pack) with recsys and
#                                            its pinned dependencies, for --archives ...#environment
# The environment is a virtual environment of its own (dist/.pack-venv) with recsys installed from
# the wheel: venv-pack refuses editable installs such as the one in .venv. Its dependencies are
# reinstalled only when pyproject.toml or .ci/constraints.txt change; a change under recsys/ rebuilds
# the wheel and re-packs (about a minute). pyspark's jars are left out of the archive: on the
# cluster the JVM side is the cluster's own Spark, the executors need only pyspark's Python code.
VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml)
WHEEL := dist/recsys-$(VERSION)-py3-none-any.whl
PACK_VENV := dist/.pack-venv
ENV_ARCHIVE := dist/recsys-env.tar.gz
LIB_FILES := $(shell find recsys -type f -not -path '*/__pycache__/*' -not -name '*.pyc')
VENV_PACK := venv-pack==0.2.0

dist: $(WHEEL) $(ENV_ARCHIVE) dist/.copied
	@ls -lh $(WHEEL) $(ENV_ARCHIVE)

$(WHEEL): pyproject.toml $(LIB_FILES)
	@mkdir -p dist
	rm -rf build dist/recsys-*.whl
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir dist .
	rm -rf build
	@test -f $@ || { echo "make: expected $@ (is the version in pyproject.toml $(VERSION)?)"; exit 1; }

dist/.copied: $(shell find jobs conf -type f -not -path '*/__pycache__/*')
	rm -rf dist/jobs dist/conf
	cp -R jobs conf dist/
	find dist/jobs dist/conf -name __pycache__ -prune -exec rm -rf {} +
	@touch $@

$(PACK_VENV)/.deps: pyproject.toml .ci/constraints.txt | $(WHEEL)
	rm -rf $(PACK_VENV)
	$(PYTHON) -m venv $(PACK_VENV)
	$(PACK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PACK_VENV)/bin/python -m pip install --quiet -c .ci/constraints.txt $(WHEEL) '$(VENV_PACK)'
	@touch $@

$(ENV_ARCHIVE): $(WHEEL) $(PACK_VENV)/.deps
	$(PACK_VENV)/bin/python -m pip install --quiet --no-deps --force-reinstall $(WHEEL)
	$(PACK_VENV)/bin/venv-pack --quiet --force --prefix $(PACK_VENV) --format tar.gz \
		--exclude 'lib/python*/site-packages/pyspark/jars/*' --output $@.part
	chmod 644 $@.part
	mv $@.part $@
