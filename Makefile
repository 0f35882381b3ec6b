# Every target sets itself up: on a fresh machine with only python3 and make,
# `make demo` and `make test` create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A second environment with the mypyc-compiled engine (LLMTRAFFIC_COMPILE=1, see setup.py),
# installed from a wheel so that no compiled file lands in src/.
FAST := .venv-compiled
SOURCES := $(shell find src -name '*.py') setup.py pyproject.toml tools/build_backend.py

.PHONY: demo test test-compiled lint typecheck bench profile lab clean help

help:
	@echo "make demo          - run the quickstart experiment and print its summary"
	@echo "make test          - lint and format check (ruff), type-check (mypy) and run the whole test suite"
	@echo "make test-compiled - run the test suite against the mypyc-compiled engine"
	@echo "make bench         - run the benchmarks and write benchmarks/RESULTS.md"
	@echo "make profile       - profile the pure-Python engine with pyinstrument (runs/profile/)"
	@echo "make lab           - open the notebooks in JupyterLab (installs the lab extra)"
	@echo "make clean         - remove the environments, caches, build files and runs/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@ $(VENV)/.installed

$(FAST)/.installed: $(SOURCES)
	rm -rf $(FAST) build
	$(PYTHON) -m venv $(FAST)
	$(FAST)/bin/python -m pip install --quiet --upgrade pip
	LLMTRAFFIC_COMPILE=1 $(FAST)/bin/python -m pip install --quiet '.[dev,bench]'
	rm -rf build
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/llmtraffic run experiments/quickstart.toml --out runs/quickstart --force

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# The installed (compiled) package is imported: src/ is not on the path of this environment.
test-compiled: $(FAST)/.installed
	$(FAST)/bin/python -c "import llmtraffic.client.client as m; assert m.__file__.endswith('.so'), m.__file__"
	$(FAST)/bin/python -m pytest -p no:cacheprovider

bench: $(VENV)/.installed-dev $(FAST)/.installed
	$(BIN)/python -m benchmarks.run --compiled $(FAST)/bin/python

$(VENV)/.installed-lab: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[lab]'
	@touch $@

lab: $(VENV)/.installed-lab
	$(BIN)/jupyter lab notebooks/

profile: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.profile_engine

clean:
	rm -rf $(VENV) $(FAST) build .mypy_cache .ruff_cache .pytest_cache .hypothesis runs
