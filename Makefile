# The two commands a new user needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-sqlite test-postgres system-deps venv bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

## Run the whole story on this machine: portal + bank sandboxes, the app, its worker. Ctrl-C stops it.
demo: $(STAMP)
	$(BIN)/b24app demo

## Install what the tests need (Debian's chromium and postgresql via apt-get), then run the suite on
## SQLite (the embedded default) and again on a throwaway PostgreSQL cluster.
test: $(STAMP) system-deps
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-postgres

## The fast tier: pure and in-process tests, no server, browser or PostgreSQL (tiers are set in tests/conftest.py).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m fast $(PYTEST_ARGS)

system-deps:
	bash scripts/ensure_system_deps.sh postgresql chromium

test-sqlite: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-postgres: $(STAMP)
	@set -e; \
	dir=$$(mktemp -u /tmp/b24app-pg.XXXXXX); \
	url=$$($(BIN)/python scripts/pg_throwaway.py start --dir $$dir); \
	trap "$(BIN)/python scripts/pg_throwaway.py stop --dir $$dir" EXIT; \
	echo "PostgreSQL: $$url"; \
	B24APP_TEST_DATABASE_URL=$$url $(BIN)/python -m pytest -q -m "not browser" $(PYTEST_ARGS)

## Benchmarks (not part of `make test`): see BENCHMARKS.md for the figures and how they were taken.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
