# The two commands of the README. Both run the install step first (idempotent, quick).
.PHONY: install run test lint bench

VENV ?= .venv
ARGS ?=

install:
	@bash scripts/install.sh

run: install
	$(VENV)/bin/sampan server $(ARGS)

test: install
	$(VENV)/bin/python -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports

bench: install
	$(VENV)/bin/python -m bench.datastore
