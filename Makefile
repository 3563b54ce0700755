# The two commands of the README: `make demo` and `make test`. Both create .venv when absent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch pair for machines without a GPU; set CONSTRAINTS= to let pip pick a CUDA build.
CONSTRAINTS ?= constraints-cpu.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-fast lint install dev clean-demo

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install -q $(PIP_C) -e .
	# the CPU torch next to the registry's torchvision: make a user's own `import timm` work too
	$(if $(CONSTRAINTS),$(BIN)/python -m maxa.extract.torchvision_hook)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q $(PIP_C) -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## demo: the synthetic experiment through `dvc repro`, ending with the leaderboard
demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" dvc repro
	@echo
	@cat reports/leaderboard.md
	@echo "Plots: reports/plots/*.png (HTML: dvc plots show)"

# Test workers (pytest-xdist): one per core; a test module stays on one worker (--dist loadfile), so its
# module fixtures (a DVC project, an extracted store) are built once, and the modules of slow tests go
# first (tests/conftest.py; --no-loadscope-reorder keeps that order). TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## test: the whole pytest suite, what CI runs (exit code 5, "no tests collected", fails like any error),
## printing the slowest tests so a slow one is seen when it lands
test: $(VENV)/.installed-dev
	$(PYTEST) --durations=15

## test-fast: the edit-test loop (under 90 s on 2 cores): every test but those marked slow or heavy
test-fast: $(VENV)/.installed-dev
	$(PYTEST) -m "not slow and not heavy" --durations=5

## lint: what CI checks before the tests (.ci/run runs `make lint test`)
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core extract probe evaluate pipelines

clean-demo:
	rm -rf data models metrics reports
