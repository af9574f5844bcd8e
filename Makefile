# Quickstart: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench serve lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/email_campaign.py

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) benchmarks/bench_server.py --update
	$(PY) benchmarks/bench_propagation.py --update
	$(PY) benchmarks/bench_propagation.py --backend postgres --replicas 2 --update
	$(PY) benchmarks/bench_guard.py --update
	$(PY) benchmarks/bench_alternatives.py --update
	$(PY) benchmarks/bench_integrations.py --update
	$(PY) benchmarks/bench_ingest.py --update
	AGENTGUARD_RELIABILITY_TOGGLES=100 AGENTGUARD_RELIABILITY_OPS=40 AGENTGUARD_STATE_EXAMPLES=100 \
		AGENTGUARD_FUZZ_EXAMPLES=40 $(PY) -m pytest tests/reliability -q

serve: $(STAMP)
	$(VENV)/bin/agentguard serve

# CI runs both before the suite (.ci/run): ruff with SLF001 (no module reaches into another's
# private names), the formatter's check, and mypy --strict over src/agentguard.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
