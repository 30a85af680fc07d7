# Two commands: `make demo` runs batchbus end to end; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint clean bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/python -m batchbus.launcher.demo

test: install lint tools
	$(BIN)/pytest

# promtool and prometheus (Debian's `prometheus` package) for the monitoring tests; needs
# root, as on CI. The package's service is not started: policy-rc.d denies it here.
.PHONY: tools
# Without root the install is skipped with a note, and the monitoring tests skip (or fail
# when CI is set, so CI never passes without them).
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	} || echo "note: could not install Debian's prometheus package; monitoring tests will skip"

# Rewrites docs/asyncapi.json from shared/asyncapi.py (tests/unit/test_asyncapi.py compares).
.PHONY: asyncapi
asyncapi: install
	$(BIN)/python -m batchbus.shared.asyncapi

# The six benchmarks of issue 8, several runs each (medians) -> docs/benchmarks.md.
# About half an hour with BENCH_RUNS=3; no test asserts a timing.
BENCH_RUNS ?= 3
bench: install
	$(BIN)/python -m bench.report --runs $(BENCH_RUNS)

# 30 simulated days at 20,000 tasks a day (bench/soak.py): day 1 against day 30, about 13
# minutes; docs/benchmarks.md has the figures.
.PHONY: soak
soak: install
	$(BIN)/python -m bench.soak

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy -p batchbus

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
