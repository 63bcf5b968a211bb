# Two commands for a newcomer: `make demo` (train on the embedded digits) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint docs clean

# The train extra: what train.py, evaluate.py, predict.py and export.py need.
$(VENV)/.train: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train]'
	touch $@

# The dev extra: train, torch, export, pytest, ruff, uv, mkdocs.
$(VENV)/.dev: $(VENV)/.train
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.train
	rm -rf runs/digits
	$(PY) train.py --config configs/digits.py --workdir runs/digits

# The linter (rules: [tool.ruff] in pyproject.toml), all tests; then the model and parity
# tests once more as on a machine without the CPU extension (RESNET_JAX_KERNELS=xla: its
# tests skip, nothing builds or loads it). The slow ones are left out of that rerun: they build
# their models with kernels="xla" (unchanged by the variable) or "native" (skipped there).
test: $(VENV)/.dev lint
	$(PY) -m pytest -m "not journey"
	RESNET_JAX_KERNELS=xla $(PY) -m pytest -q -m "not slow" tests/test_models.py tests/test_parity.py tests/test_export.py

# The inner loop: the unit tests (not slow, not end to end: tests/conftest.py), ~3 minutes.
test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow and not e2e"

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

# The documentation site (docs/, mkdocs.yml) into site/; tests/test_docs.py builds it too.
docs: $(VENV)/.dev
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
