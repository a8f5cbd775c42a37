# Quick start:  make run    (sets up .venv with the package alone, runs the quick suite into results/)
#               make test   (adds the test and ray extras, runs the test suite)
# TORCH pins the CPU build that CI installs; use your own with `make test TORCH=torch`.
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup setup-test run demo test lint typecheck bench clean

# The main job needs the package alone; the tests add the test and ray extras on top.
# torch comes through pip, which finds a machine's local build (pip.conf find-links); the rest
# through uv (https://docs.astral.sh/uv/): 5 s where pip took 50 s here. With torch installed
# first, uv keeps it (the package asks for torch>=2.1). Nothing is byte-compiled for the main job
# (Python compiles what it imports); the tests' many processes get all of site-packages compiled
# once, on 2 cores (a machine with PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every
# import in every process). Without uv: make setup PIP=".venv/bin/python -m pip install".
PIP ?= $(VENV)/bin/uv pip install --python $(PY)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile "$(TORCH)" uv
	$(PIP) --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) --quiet -e ".[test,ray]"
	$(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
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
