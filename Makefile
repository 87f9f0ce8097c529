# Two entry points (see README): `make demo` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test build lint typecheck unit unit-pure bench-quick bench system-deps clean

# the install compiles the sans-IO core with mypyc (setup.py, aionetstack/_accel.py): an edit
# to one of its sources re-runs it (until then the package runs pure Python, with a warning)
CORE_SOURCES := $(wildcard aionetstack/transport/tcp/*.py aionetstack/stack/*.py aionetstack/network/*.py aionetstack/wire/*.py) aionetstack/link/vnet.py

$(STAMP): pyproject.toml setup.py aionetstack/_accel.py $(CORE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

build: $(STAMP)

demo: $(STAMP)
	$(PY) -m aionetstack demo

system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check aionetstack tests fuzz benchmarks $(wildcard examples)
typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict aionetstack benchmarks
unit: $(STAMP)
	$(PY) -c 'import aionetstack; print("aionetstack: compiled core" if aionetstack.compiled else "aionetstack: pure Python")'
	$(PY) -m pytest -q -p no:cacheprovider
# the same sources as pure Python: the sans-IO core's suites, and the tests that patch a compiled
# module's internals (marked pure_python; skipped in the compiled run)
unit-pure: $(STAMP)
	AIONETSTACK_PURE=1 $(PY) -m pytest -q -p no:cacheprovider tests/core tests/tcp tests/wire tests/link/test_vnet.py
	AIONETSTACK_PURE=1 $(PY) -m pytest -q -p no:cacheprovider -m pure_python tests --ignore=tests/core --ignore=tests/tcp --ignore=tests/wire --ignore=tests/link/test_vnet.py

# benchmark smoke run (< 2 minutes; fails if a case crashes, never on speed)
bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick --json /tmp/aionetstack-bench.json
# the full run (root for the TUN cases): benchmarks/results/latest.json and PNG plots
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench,pytcp]'
	$(PY) -m benchmarks

test: system-deps $(STAMP) lint typecheck bench-quick unit unit-pure

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build
	find aionetstack -name '*.so' -delete; rm -f *__mypyc*.so
