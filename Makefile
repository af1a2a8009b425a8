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

.PHONY: setup plots-assets browser run test lint clean-venv

setup: $(STAMP) plots-assets browser

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

# Headless Chromium for the tests that open the plots page and the MLflow UI as a person
# would: Debian's package, installed when missing and apt-get is usable (root). Without
# it set-up goes on and those tests skip.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
			&& echo "chromium: installed $$(command -v chromium)"; \
	else \
		echo "chromium: not installed, and apt-get is not usable here (needs root): the browser tests will skip"; \
	fi

run: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check fishseg stages tests benchmarks
	$(BIN)/ruff format --check fishseg stages tests benchmarks

clean-venv:
	rm -rf $(VENV)
