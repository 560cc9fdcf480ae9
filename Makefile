# Two commands on a fresh machine: `make demo` (main job) and `make test` (test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite runs twice: in .venv, the full install (every extra: `.[dev]`), and in .venv-bare, the base
# install (torch, numpy, scipy, safetensors, tqdm) with the test tools and matplotlib only (the `test` extra):
# no Numba, scikit-learn, Optuna, ONNX or image libraries, so their tests skip and their features refuse in one line.
BARE := .venv-bare
BARE_STAMP := $(BARE)/.installed

.PHONY: demo test test-slow docs lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of PyTorch (an unpinned torch pulls gigabytes of CUDA packages).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# No extra may replace it (the deepinv extra pins torchvision 0.28.0, whose torch==2.13.0 the CPU build meets).
	$(BIN)/python -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu")'
	touch $(STAMP)

$(BARE_STAMP): pyproject.toml
	rm -rf $(BARE)  # extras installed by an older pyproject.toml must go
	$(PY) -m venv $(BARE)
	$(BARE)/bin/pip install -q --upgrade pip
	$(BARE)/bin/pip install -q torch==2.13.0
	$(BARE)/bin/pip install -q -e '.[test]'
	! $(BARE)/bin/python -c 'import numba' 2>/dev/null
	! $(BARE)/bin/python -c 'import sklearn' 2>/dev/null
	! $(BARE)/bin/python -c 'import optuna' 2>/dev/null
	touch $(BARE_STAMP)

demo: $(STAMP)
	$(BIN)/unrolled demo --out runs/demo

test: $(STAMP) $(BARE_STAMP)
	$(BIN)/ruff check unrolled tests benchmarks
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site  # the documentation site, warnings as errors
	$(BIN)/pytest
	@echo "--- again on the base install (no extras: backends reference and torch) ---"
	$(BARE)/bin/pytest

# The documentation site (mkdocs.yml; API reference from the docstrings); warnings are errors.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/site

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

clean:
	rm -rf $(VENV) $(BARE) runs
