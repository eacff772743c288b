# Two commands for a fresh machine: `make run` and `make test`.
# The virtual environment is created on first use: torch 2.13.0 (CPU wheel) first, so that no
# dependency pulls a CUDA build, then xasflow with its pinned dependencies.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config.yaml
REPORT ?= results/report.html
STAMP := $(VENV)/.xasflow-installed

export PATH := $(abspath $(BIN)):$(PATH)
# FEFF10, LAMMPS and torch each run one process per Snakemake job: keep them single-threaded
export OMP_NUM_THREADS ?= 1

.PHONY: run test lint report clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)

# one self-contained HTML page of a finished run's figures and tables (see README, "The report")
report: $(STAMP)
	$(BIN)/snakemake --configfile $(CONFIG) --report $(REPORT)

test: $(STAMP)
	$(BIN)/python -m pytest -ra

# ruff (lint and format), the one-way import contract (pyproject.toml), the Snakemake linter
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/snakemake --lint --configfile $(CONFIG)

clean:
	rm -rf results/* .snakemake
