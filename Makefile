# Two entry points (see README): `make demo` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench-quick bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m aionetstack demo

system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check aionetstack tests fuzz benchmarks $(wildcard examples)
typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict aionetstack benchmarks
unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# benchmark smoke run (< 2 minutes; fails if a case crashes, never on speed)
bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick --json /tmp/aionetstack-bench.json
# the full run (root for the TUN cases): benchmarks/results/latest.json and PNG plots
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench,pytcp]'
	$(PY) -m benchmarks

test: system-deps $(STAMP) lint typecheck bench-quick unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
