# Quick start:  make run    (sets up .venv with the package alone, runs the quick suite into results/)
#               make test   (adds the test and ray extras, runs the test suite)
# TORCH pins the CPU build that CI installs; use your own with `make test TORCH=torch`.
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup setup-test run demo test lint typecheck bench clean

# the main job needs the package alone; the tests add the test and ray extras on top
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -e .   # one resolve: the pinned torch and the package together
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

run: setup
	$(VENV)/bin/sdebench run quick --jobs 2

demo: setup
	$(VENV)/bin/sdebench demo

test: setup-test
	$(PY) -m pytest -q

# the lint rules are in pyproject.toml ([tool.ruff])
lint: setup-test
	$(VENV)/bin/ruff check .

# mypy on solvers/ (the settings and the reason for them are in pyproject.toml, [tool.mypy])
typecheck: setup-test
	$(VENV)/bin/mypy

bench: setup-test
	$(PY) -m pytest bench/perf --benchmark-enable --benchmark-only -q

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
