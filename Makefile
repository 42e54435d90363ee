# `make run` and `make test` do all the set-up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DAGSTER_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: setup run test bench clean

setup: $(VENV)/.installed dbt_project/target/manifest.json

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import dagster, dagster_dbt, dbt.version, duckdb, fastapi" # fail here if the install did not
	touch $@

# dagster-dbt loads the dbt manifest when the definitions are imported: parse once here.
dbt_project/target/manifest.json: $(VENV)/.installed $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v target/)
	$(BIN)/python -m engage.dbt_manifest

run: setup
	$(BIN)/python -m engage.dev

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .engage dbt_project/target dbt_project/logs
