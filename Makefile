# Two commands for a fresh machine: `make run` (the main job on the embedded default) and `make test`.
# Both create the virtual environment .venv when it is missing, with the pins of requirements.txt.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --printshellcmds --show-failed-logs

.PHONY: browser run test lint bench bench-full dry-run clean venv fault-injection

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

test: venv browser
	$(BIN)/python -m pytest

# The HTML report's test opens it in Debian's headless chromium: installed here when missing and apt works
# (as root); elsewhere that one test skips and says why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		echo "installing chromium for the report test (log: .venv/apt.log)" && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		chromium; } >.venv/apt.log 2>&1; } || echo "chromium unavailable: the browser test will skip"

# Static checks (≈ 15 s): ruff and snakefmt with the settings in pyproject.toml, Snakemake's own linter, and the
# structure tests (torch-free parse, registries that agree, downward imports, no lambdas in rules).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_structure.py

bench: venv
	$(BIN)/python bench/bench_tlm.py
	$(BIN)/python bench/bench_similarity.py --quick
	$(BIN)/python bench/bench_dag.py
	$(BIN)/python bench/bench_integrity.py

bench-full: venv
	$(BIN)/python bench/bench_similarity.py

# SIGKILL the workflow FI_KILLS times at seeded random moments (one fresh run each), audit what each kill left,
# resume, and compare the tables with an uninterrupted run (tools/fault_injection.py; ≈ 30 min on 2 idle cores).
FI_CONFIG ?= tests/configs/tiny.yaml
FI_KILLS ?= 10
FI_SEED ?= 0
fault-injection: venv
	$(BIN)/python tools/fault_injection.py --configfile $(FI_CONFIG) --kills $(FI_KILLS) --seed $(FI_SEED) \
		--cores $(CORES)

# As root: a one-node SLURM cluster on this machine (installed with apt if missing, stopped afterwards), the tiny
# config locally and through profiles/slurm, tables compared byte for byte (tools/slurm/e2e.sh). Measured 27 min on
# 2 cores busy with other work (local run 13, SLURM run 14); cluster install 15 s, start 3 s. E2E_ARGS=--check
# checks the script's paths and arguments without root or daemons (tests/test_slurm.py runs it).
.PHONY: slurm-test
slurm-test: venv
	PYTHON=$(abspath $(BIN))/python tools/slurm/e2e.sh $(E2E_ARGS)

dry-run: venv
	$(BIN)/snakemake -n --quiet rules

clean:
	rm -rf results .snakemake
