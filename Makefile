# Two commands do all set-up: `make demo` and `make test`. Both create .venv when needed and
# install the project with the pinned versions of constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DS ?= $(shell date -u +%F)
STAMP := $(VENV)/.installed

.PHONY: demo test check-java install bench-prepare clean

check-java:
	@command -v java >/dev/null 2>&1 || { echo "make: Java is missing: install Java 17 (Spark 3.5 needs a JVM; e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: check-java $(STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

demo: install
	$(VENV)/bin/recsys prepare --conf conf/movielens.yaml --ds $(DS)
	$(VENV)/bin/recsys train --conf conf/movielens.yaml --ds $(DS)

# Not part of `make test`: prepare on 1M and 10M synthetic events (several minutes).
bench-prepare: install
	$(PY) benchmarks/bench_prepare.py --events 1000000 10000000

clean:
	rm -rf var .bench
