# Quickstart: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-crewai bench serve lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

# CrewAI pins openai<3, mcp<2 and pydantic<2.13, which `all` cannot hold beside openai-agents
# (openai 3) and the mcp extra (mcp 2.3): its adapter is type-checked and tested in a venv of
# its own. In .venv its tests skip, saying so.
CREWAI_VENV := .venv-crewai
CREWAI_STAMP := $(CREWAI_VENV)/.installed

# With uv (in .venv once it is built: the dev extra has it) the install takes ~20 s here; pip
# took 6.5 min on this machine.
$(CREWAI_STAMP): pyproject.toml
	$(PYTHON) -m venv $(CREWAI_VENV)
	if [ -x $(VENV)/bin/uv ]; then \
		$(VENV)/bin/uv pip install --quiet --python $(CREWAI_VENV)/bin/python -e ".[crewai,server,dev]"; \
	else \
		$(CREWAI_VENV)/bin/python -m pip install --quiet --upgrade pip && \
		$(CREWAI_VENV)/bin/python -m pip install --quiet -e ".[crewai,server,dev]"; \
	fi
	touch $(CREWAI_STAMP)

demo: $(STAMP)
	$(PY) examples/email_campaign.py

# The whole suite: .venv's, then CrewAI's adapter in its own venv.
test: $(STAMP) $(CREWAI_STAMP)
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-crewai

test-crewai: $(CREWAI_STAMP)
	$(CREWAI_VENV)/bin/mypy src/agentguard/integrations/crewai.py
	$(CREWAI_VENV)/bin/python -m pytest tests/integrations/test_crewai.py \
		tests/test_examples_integrations.py -k crewai

bench: $(STAMP) $(CREWAI_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) benchmarks/bench_server.py --update
	$(PY) benchmarks/bench_propagation.py --update
	$(PY) benchmarks/bench_propagation.py --backend postgres --replicas 2 --update
	$(PY) benchmarks/bench_propagation.py --guards 100 1000 3000 --update
	$(PY) benchmarks/bench_inflight.py --update
	$(PY) benchmarks/bench_guard.py --update
	$(PY) benchmarks/bench_alternatives.py --update
	$(PY) benchmarks/bench_integrations.py --update
	$(CREWAI_VENV)/bin/python benchmarks/bench_crewai.py --update
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
	rm -rf $(VENV) $(CREWAI_VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
