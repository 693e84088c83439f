# Two commands for a fresh machine: `make run` (the main job on the embedded default) and `make test`.
# Both create the virtual environment .venv when it is missing, with the pins of requirements.txt.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --printshellcmds --show-failed-logs

.PHONY: run test lint bench bench-full dry-run clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (about 2 minutes; log: $(VENV)/pip.log)"
	@$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt >$(VENV)/pip.log 2>&1 \
		|| { tail -30 $(VENV)/pip.log; exit 1; }
	@$(BIN)/python -m pip install --disable-pip-version-check --no-deps -e . >>$(VENV)/pip.log 2>&1 \
		|| { tail -30 $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import torch, torchvision, snakemake, stitchlib" 
	@touch $@

run: venv
	$(SNAKEMAKE)
	@echo; cat results/tables/*/table1.md; echo "figures: results/figures/"

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/snakemake --lint

bench: venv
	$(BIN)/python bench/bench_tlm.py
	$(BIN)/python bench/bench_similarity.py --quick

bench-full: venv
	$(BIN)/python bench/bench_similarity.py

dry-run: venv
	$(BIN)/snakemake -n --quiet rules

clean:
	rm -rf results .snakemake
