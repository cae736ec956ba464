# One entry point. Every target bootstraps .venv from uv.lock first (installing uv if missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
SYNCED := $(VENV)/.synced-$(shell cksum uv.lock | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install test demo dev bench check-definitions clean

install: $(SYNCED)

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

$(SYNCED): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups --python $(PYTHON)
	rm -f $(VENV)/.synced-*
	touch $@

check-definitions: $(SYNCED)
	$(BIN)/dagster definitions validate -m qmtl_validation.definitions

test: $(SYNCED) check-definitions
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(SYNCED)
	$(BIN)/python -m qmtl_validation.demo

dev: $(SYNCED)
	$(BIN)/dagster dev

bench: $(SYNCED)
	$(BIN)/python -m bench

clean:
	rm -rf .dagster_home data/landing data/warehouse
