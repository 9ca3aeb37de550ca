# Two commands for a fresh clone: `make demo` and `make test`.
# Both create .venv and install the project into it first, so nothing is done by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench install

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/daftscale demo $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

test: $(BIN)/.installed lint
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python -m bench $(ARGS)
