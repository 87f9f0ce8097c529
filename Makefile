# Two entry points (see README): `make demo` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit system-deps clean

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
	$(VENV)/bin/ruff check aionetstack tests $(wildcard examples)
typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict aionetstack
unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test: system-deps $(STAMP) lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
