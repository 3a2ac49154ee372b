# dyadlab: `make demo` runs a short simulated session end to end; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dyadlab-installed
DEMO_OUT ?= demo-output
# Two virtual screens side by side, so one-screen-per-participant layouts are testable.
XVFB   := xvfb-run -a -s "-screen 0 1280x800x24 -screen 1 1280x800x24 +xinerama"

.PHONY: setup system-deps demo test bench clean

setup: system-deps $(STAMP)

system-deps:
	@bash .ci/system-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/dyadlab demo --out $(DEMO_OUT)

test: setup
	$(XVFB) $(PY) -m pytest -ra

bench: setup
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) test-artifacts .pytest_cache
