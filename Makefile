# prunedge: `make export` builds everything from nothing; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= $(or $(PRUNEDGE_DATA),/usr/share/datasets/fashion-mnist)
export PRUNEDGE_DATA := $(DATA_DIR)
# Optional user inputs: NET=cnn (the built-in CNN instead of the MLP), MODEL/DATA/ARCH (import a trained
# network; ARCH for .pt state_dicts and TorchScript CNNs), FORMAT, SEEDS,
# DEVICE_RESULTS, QUICK=1 (bench smoke test), BENCH_ARGS (e.g. "--framework torch --method weight,unit").
MODEL ?=
DATA ?=
ARCH ?=
NET ?=
FORMAT ?=
SEEDS ?=
DEVICE_RESULTS ?=
QUICK ?=
BENCH_ARGS ?=

.PHONY: all setup data train prune export bench report bundle test test-fast fuzz test-arm64 clean help

all: export

help:
	@echo "make export   - set up, train, prune, shrink/CSR, export and verify everything (MODEL=... DATA=... to import)"
	@echo "make test     - run the test suite"
	@echo "make train | prune | bench | report | bundle | test-fast | fuzz | test-arm64"

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

# The Debian package ships the four IDX .gz files; only installed when they are missing.
data:
	@if [ ! -f "$(DATA_DIR)/train-images-idx3-ubyte.gz" ]; then \
	  if [ "$(DATA_DIR)" = "/usr/share/datasets/fashion-mnist" ]; then \
	    echo "installing dataset-fashion-mnist"; \
	    apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  else echo "error: $(DATA_DIR): Fashion-MNIST files not found" >&2; exit 2; fi; \
	fi

train: setup data
	$(PY) -m pipeline train $(if $(NET),--net $(NET)) $(if $(SEEDS),--seeds $(SEEDS))

prune: train
	$(PY) -m pipeline prune $(if $(NET),--net $(NET)) $(if $(SEEDS),--seeds $(SEEDS))

export: setup $(if $(MODEL),,data)
	$(PY) -m export run $(if $(NET),--net $(NET)) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA)) $(if $(ARCH),--arch '$(ARCH)')

bench: setup
	$(PY) -m bench run $(if $(QUICK),--quick) $(BENCH_ARGS)

report: setup
	$(PY) -m report --seeds $(or $(SEEDS),3) $(if $(DEVICE_RESULTS),--device-results $(DEVICE_RESULTS))

bundle: setup
	$(PY) -m bundle $(if $(MODEL),--model $(MODEL)) $(if $(FORMAT),--format $(FORMAT))

test: setup data
	$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The inner loop: everything not marked slow (training, many exports, subprocess sweeps), < 60 s.
test-fast: setup data
	$(PY) -m pytest -q -m "not slow" tests

# Many more fuzz examples than make test runs: FUZZ_EXAMPLES per loader (default 10000).
fuzz: setup data
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),10000) $(PY) -m pytest -q -s tests/test_fuzz.py

test-arm64: setup
	bash scripts/test_arm64.sh

clean:
	rm -rf artifacts
