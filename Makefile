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

test: $(VENV)/.dev
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs
