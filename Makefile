# One command each: `make demo` (set up + run the main job), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := envs/constraints.txt

.PHONY: install demo test test-fast bench clean

$(BIN)/qdiff: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the CPU wheel; a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[workflow,dev,tensorboard]"
	touch $(BIN)/qdiff

install: $(BIN)/qdiff

# The rules call `qdiff`, so the venv's bin goes first on PATH.
demo: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 2 --printshellcmds

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/bench_quotient_ops.py

clean:
	rm -rf $(VENV) results logs .snakemake
