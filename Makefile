# The two commands of the README. Both run the install step first (idempotent, quick).
.PHONY: install run test test-repeat lint bench

VENV ?= .venv
ARGS ?=

install:
	@bash scripts/install.sh

run: install
	$(VENV)/bin/sampan server $(ARGS)

test: install
	$(VENV)/bin/python -m pytest $(ARGS)

# The whole suite N times in a row (default 3), stopping at the first failing run: flaky tests
# show up here before they block a submission.
N ?= 3
test-repeat: install
	@for i in $$(seq 1 $(N)); do \
	  echo "== run $$i of $(N) =="; \
	  $(VENV)/bin/python -m pytest $(ARGS) || exit 1; \
	done

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/python -m bench.datastore
