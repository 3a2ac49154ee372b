# dyadlab: `make demo` runs a short simulated session end to end; `make test` runs the suite;
# `make lint` runs ruff (lint + format check) and mypy.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dyadlab-installed
DEMO_OUT ?= demo-output
# Two virtual screens side by side, so one-screen-per-participant layouts are testable.
XVFB   := xvfb-run -a -s "-screen 0 1280x800x24 -screen 1 1280x800x24 +xinerama"
# mypy cannot follow setuptools' editable finder, so it checks a plain installed copy (build/ is
# gitignored; the cache beside it keeps re-runs fast). build/lib goes first: setuptools would
# otherwise copy modules deleted from the tree since the last build into the installed copy.
TYPECHECK := build/typecheck
# What mypy checks: the whole package.
MYPY_TARGETS ?= -p dyadlab

.PHONY: setup system-deps demo test lint typecheck bench clean mutate planted-bugs

setup: system-deps $(STAMP)

system-deps:
	@bash .ci/system-deps.sh

# The lint tools go in second, held to the versions the tests run on: resolved together with the
# test extras, scipy-stubs' numpy-typing-compat would pull numpy forward and psychtoolbox back.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip list --format=freeze --exclude-editable > $(VENV)/test-constraints.txt
	$(PY) -m pip install -q -c $(VENV)/test-constraints.txt -e '.[lint]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/dyadlab demo --out $(DEMO_OUT)

# Two workers, each with its own Xvfb and LSL SessionID (tests/conftest.py; docs/testing.md):
# most tests wait on real time, so two workers halve the wall time on a 2-core machine.
# PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

test: setup
	$(XVFB) $(PY) -m pytest -ra -n $(PYTEST_WORKERS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# Needs only the venv (not the system packages): the pre-commit hook runs it.
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) build/lib
	$(PY) -m pip install -q --no-deps --target $(TYPECHECK) .
	cd $(TYPECHECK) && $(abspath $(VENV))/bin/mypy --config-file $(CURDIR)/pyproject.toml \
		--cache-dir $(abspath build/mypy-cache) $(MYPY_TARGETS)

# Not part of `make test` (docs/testing.md). Mutation testing takes minutes per module: pick some
# with MUTATE_ARGS="--module synchrony/xdfreader.py --module acquisition/clock.py".
mutate: setup
	$(PY) -m pip install -q -c $(VENV)/test-constraints.txt -e '.[mutate]'
	$(XVFB) $(PY) -m tests.mutation $(MUTATE_ARGS)

# Each planted bug must fail the tests that claim to guard against it (tests/planted_bugs.py).
planted-bugs: setup
	$(XVFB) $(PY) -m tests.planted_bugs

bench: setup
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) test-artifacts .pytest_cache $(TYPECHECK) build/mypy-cache
