# Two entry points: `make run` (the whole pipeline) and `make test` (the test suite).
# Both create .venv and install requirements.txt first if needed.

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(abspath $(VENV))/bin
STAMP   := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

# Stages run `python ...`: make it the venv's. Keep libraries off the network.
export PATH := $(BIN):$(PATH)
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg

.PHONY: setup plots-assets run test lint clean-venv

setup: $(STAMP) plots-assets

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned pair comes from the local wheel cache when there is one.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# The offline page of `dvc plots show/diff` (.dvc/config: plots.html_template): pinned vega
# bundles from the npm registry into .dvc-plots-assets/ (fetched once), and the page
# template that points at them by absolute path (rewritten every time, so a moved checkout
# is fixed by the next `make setup`).
plots-assets: $(STAMP)
	$(BIN)/python -m fishseg.report.plots_page install

run: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check fishseg stages tests benchmarks
	$(BIN)/ruff format --check fishseg stages tests benchmarks

clean-venv:
	rm -rf $(VENV)
