# Two commands for a newcomer: `make demo` (train on the embedded digits) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.base
	rm -rf runs/digits
	$(PY) train.py --config configs/digits.py --workdir runs/digits

# All tests; then the model and parity tests once more as on a machine without the CPU
# extension (RESNET_JAX_KERNELS=xla: its tests skip, nothing builds or loads it).
test: $(VENV)/.dev
	$(PY) -m pytest
	RESNET_JAX_KERNELS=xla $(PY) -m pytest -q tests/test_models.py tests/test_parity.py tests/test_export.py

clean:
	rm -rf $(VENV) runs
