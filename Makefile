# Quick start:  make run    (sets up .venv, runs the quick suite into results/)
#               make test   (sets up .venv, runs the test suite)
# TORCH pins the CPU build that CI installs; use your own with `make test TORCH=torch`.
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup run demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/sdebench run quick

demo: setup
	$(VENV)/bin/sdebench demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pytest bench/perf --benchmark-enable --benchmark-only -q

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
