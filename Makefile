# The two commands of the README contract: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
# Small models on 2 shared cores: passive OpenMP waiting avoids 10-100x slowdowns under contention.
export OMP_WAIT_POLICY ?= PASSIVE
export MPLBACKEND ?= Agg

.PHONY: demo test test-slow install install-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	OMP_NUM_THREADS=2 $(BIN)/kdforge demo --out runs/demo --overwrite

test: install-test
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# The multi-process and end-to-end tests (FSDP/DDP under torchrun, kill -9 and resume): about 3 minutes.
test-slow: install-test
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m slow

lint: install-test
	$(BIN)/pip install -q ruff && $(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
