# The two commands a newcomer needs:
#   make demo   create .venv if absent, run the embedded default end to end, write the HTML report
#   make test   create .venv if absent, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
CORES  ?= 2
# extra pip arguments for torch, e.g. --index-url https://download.pytorch.org/whl/cpu (see README)
TORCH_PIP_ARGS ?=
# rules call the `crossdiff` command: the venv's bin must be on PATH for every job
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: envs/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned, so no other build is pulled in (CPU or CUDA build: see README)
	$(BIN)/pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -r envs/requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $@

demo: venv
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	@echo "results in results/, report in results/report.html"

test: venv
	$(BIN)/python -m pytest -q --durations=30 tests

lint: venv
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results logs .snakemake
