# One entry point. Every target bootstraps .venv from uv.lock first (installing uv if missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
SYNCED := $(VENV)/.synced-$(shell cksum uv.lock | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install test prod-smoke load-test demo dev bench check-definitions clean docs docs-check

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

# Three workers on two cores: the suite is real Dagster runs, servers and subprocesses that spend
# a third of their time waiting (ticks, retries, process start), so two workers left the cores
# about 35% idle.
test: $(SYNCED) check-definitions
	$(BIN)/python -m pytest -n 3 $(PYTEST_ARGS)

# The production profile end to end: a fresh PostgreSQL database (local cluster, 127.0.0.1:5432)
# and moto's S3 server, deploy/dagster.yaml as the instance, sensors ticking, runs executing.
# `make test` runs the same tests among the others.
prod-smoke: $(SYNCED)
	$(BIN)/python -m pytest -m prod_smoke $(PYTEST_ARGS)

# 2,000 bundles and 200 snapshots dropped at once, through the sensors (several minutes; prints
# wall time and peak memory). Not part of `make test`.
load-test: $(SYNCED)
	QMTL_LOAD_TEST=1 $(BIN)/python -m pytest -m load -s $(PYTEST_ARGS)

demo: $(SYNCED)
	$(BIN)/python -m qmtl_validation.demo

# The lineage UI and the daemon on the dev profile (root dagster.yaml: instance under .dagster_home/,
# landing zone data/landing/, lake data/warehouse/): the landing-zone sensors are on by default, so
# a bundle dropped into data/landing/runs/<today>/... shows up as a run. DEV_ARGS e.g. "-p 3001".
DEV_ARGS ?=
dev: $(SYNCED)
	mkdir -p data/landing
	unset DAGSTER_HOME; QMTL_PROFILE=dev $(BIN)/dagster dev -w workspace.yaml $(DEV_ARGS)

# Regenerate the generated reference pages (docs/POLICY_DSL.md, WAREHOUSE.md, CLI.md) from the code.
docs: $(SYNCED)
	$(BIN)/python -m qmtl_validation.docs_gen

# The generated pages are current, and every command shown in README.md and docs/ runs as written.
docs-check: $(SYNCED)
	$(BIN)/python -m qmtl_validation.docs_gen --check
	$(BIN)/python -m pytest qmtl_validation_tests/docs -q $(PYTEST_ARGS)

bench: $(SYNCED)
	$(BIN)/python -m bench

clean:
	rm -rf .dagster_home data/landing data/warehouse
