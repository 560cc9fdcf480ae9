# Two commands on a fresh machine: `make demo` (main job) and `make test` (test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite runs a second time in an environment without Numba (the optional `fast` extra).
BARE := .venv-bare
BARE_STAMP := $(BARE)/.installed

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of PyTorch (an unpinned torch pulls gigabytes of CUDA packages).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(BARE_STAMP): pyproject.toml
	$(PY) -m venv $(BARE)
	$(BARE)/bin/pip install -q --upgrade pip
	$(BARE)/bin/pip install -q torch==2.13.0
	$(BARE)/bin/pip install -q -e '.[test]'
	! $(BARE)/bin/python -c 'import numba' 2>/dev/null
	touch $(BARE_STAMP)

demo: $(STAMP)
	$(BIN)/unrolled demo --out runs/demo

test: $(STAMP) $(BARE_STAMP)
	$(BIN)/ruff check unrolled tests benchmarks
	$(BIN)/pytest
	@echo "--- again without Numba (backends reference and torch) ---"
	$(BARE)/bin/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

clean:
	rm -rf $(VENV) $(BARE) runs
