# Two commands for a fresh machine:
#   make demo   install, then train the tutorial's CNN on the embedded MNIST digits
#   make test   install with the test tools, then run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= runs/demo

.PHONY: demo test lint format install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/cnnlab hello
	$(BIN)/cnnlab train --out $(DEMO) --overwrite
	$(BIN)/cnnlab predict $(DEMO) examples/images/digit-*.png
	@echo "curves: $(DEMO)/curves.png   confusion matrix: $(DEMO)/confusion.png"

test: install-dev
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check cnnlab tests benchmarks
	$(BIN)/ruff format --check cnnlab tests benchmarks

format: install-dev
	$(BIN)/ruff format cnnlab tests benchmarks
	$(BIN)/ruff check --fix cnnlab tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
