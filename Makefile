# The two commands of the README: `make run` (set up, then serve the relay locally)
# and `make test` (set up, then run every test). Both create their own .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/relay-local

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy layers/relay/relay functions local/relay_local clients/relay_mac tests
	$(BIN)/mypy bench

test: $(STAMP) lint typecheck
	scripts/ensure-chromium
	$(BIN)/pytest

# The fast tier: every test that starts no other process (relay-local, relay-mac, sam,
# checkov, a fresh interpreter) and no browser, spread over every core (pytest-xdist).
# The invariant machines run fewer random examples here than in `make test` (25 and 12).
test-fast: $(STAMP)
	RELAY_INVARIANT_EXAMPLES=5 RELAY_INVARIANT_REUSED_CODE_EXAMPLES=3 $(BIN)/pytest -n auto --dist worksteal -m 'not process and not browser'

clean:
	rm -rf $(VENV) .venv-sam .venv-checkov .aws-sam .pytest_cache .mypy_cache .ruff_cache

# Build the SAM application into .aws-sam/build with aws-sam-cli from its own
# virtualenv (.venv-sam, created on first use); needs python3.13 (pyenv 3.13.0).
.PHONY: sam-build
sam-build:
	scripts/sam-build .aws-sam/build

# The figures of docs/PERFORMANCE.md: cold starts, calls per operation at 10 and 100,000
# sessions, send handler time, throughput through relay-local (about 5 minutes on 2
# cores; tables on stdout, JSON in bench/results/).
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/call_counts.py
	$(BIN)/python bench/handler_time.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/cost_model.py
