# The two commands a fresh machine needs (see README):
#   make run    install into .venv, then run the embedded default experiment
#   make test   install into .venv (with test tools), then lint and run the whole test suite
#
# TORCH_SPEC picks the torch build. On these machines `torch==2.13.0` resolves to the CPU wheel
# that lies on disk; elsewhere, for a CPU-only build, use e.g.
#   make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" test
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN        := $(VENV)/bin
# Tests and benchmarks read MNIST from the shared data folder when there is one beside the
# project; otherwise the loader uses $FEDLOOM_DATA or ~/.cache/fedloom (downloading if online).
ifneq ($(wildcard ../shared/data/mnist),)
export FEDLOOM_DATA ?= $(abspath ../shared/data)
endif

.PHONY: run test lint browser bench bench-deploy bench-dashboard test-under-load install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/fedloom run

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy src

# The dashboard's browser test drives Debian's Chromium through Playwright (a dev extra; no
# `playwright install`, no browser download): install the distribution package when missing.
browser:
	@test -x /usr/bin/chromium || { \
	  if command -v apt-get >/dev/null; then \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium || \
	    { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q && \
	      $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium; }; \
	  else echo "make browser: no apt-get; install Chromium as /usr/bin/chromium for the dashboard test"; fi; }

test: install lint browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run_workloads

bench-deploy: install
	$(BIN)/python -m benchmarks.run_deploy

bench-dashboard: install
	$(BIN)/python -m benchmarks.dashboard_overhead

# The networked and fault tests five times in a row with every core busy (docs/RELIABILITY.md).
test-under-load: install
	$(BIN)/python -m benchmarks.under_load --runs 5

clean:
	rm -rf $(VENV) runs .pytest_cache
