# The two commands: `make demo` (set up, then run the main job on the embedded defaults)
# and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint bench ui clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/upi-risk demo

test: setup
	bash tests/system_packages.sh
	$(BIN)/ruff check pipelines tests benchmarks
	$(BIN)/pytest -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check pipelines tests benchmarks
	$(BIN)/ruff format --check pipelines tests benchmarks

ui: setup
	DAGSTER_HOME=$(CURDIR)/data/dagster $(BIN)/dg dev

clean:  # everything the demo wrote under data/: models, outbox and token key too
	find data -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
