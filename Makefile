# Two targets a newcomer needs: `make demo` and `make test` (`make test-fast` while working).
# Each creates or updates .venv itself.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test test-fast lint venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements/lock.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

demo: $(STAMP)
	$(VENV)/bin/ghostnet-pipeline demo $(ARGS)

# -X faulthandler: pytest's own handler stops at its unconfigure; this one lasts through the
# interpreter's teardown, so a crash there still prints every thread's stack.
test: $(STAMP)
	RAY_DATA_DISABLE_PROGRESS_BARS=1 $(VENV)/bin/python -X faulthandler -m pytest $(ARGS)

# The loop while working: unit tests only (no Ray, no S3, no subprocess; tests/tiers.py keeps them so).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m unit $(ARGS)

# mypy's packages and mode (--strict for every package) are in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check ghostnet pipeline analytics demo jobs tests bench tools
	$(VENV)/bin/mypy
