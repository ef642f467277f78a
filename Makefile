# Two commands for a fresh machine:
#   make demo   install, then train the tutorial's CNN on the embedded MNIST digits
#   make test   install with the test tools, then run the whole suite (COV=--cov=cnnlab: and its coverage)
#   make test-fast   the suite without the tests marked slow (under a minute on 2 cores)
#   make figures   retrain runs/demo, regenerate docs/images/*.png and print the numbers the README quotes
#   make docs   build the documentation site into site/ (mkdocs-material, --strict)
#   make notebooks   re-execute the tutorial notebooks at full size (examples/*.py -> notebooks/*.ipynb)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= runs/demo

.PHONY: demo test test-fast figures lint format install install-dev kernel notebooks docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[notebooks]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The Jupyter kernel "cnnlab" (this venv's python) that the notebooks ask for.
kernel: install
	$(BIN)/python -m ipykernel install --user --name cnnlab --display-name "Python (cnnlab)"

demo: install kernel
	$(BIN)/cnnlab hello
	$(BIN)/cnnlab train --out $(DEMO) --overwrite
	$(BIN)/cnnlab predict $(DEMO) examples/images/digit-*.png
	@echo "curves: $(DEMO)/curves.png   confusion matrix: $(DEMO)/confusion.png"

# `make test COV=--cov=cnnlab` (what CI runs) ends with the coverage of cnnlab/: the code run in the test
# process (the CLI runs in-process through cnnlab.cli.main; the few tests that start a real `cnnlab`
# process are not counted). Off by default: tracing made test-fast take 1.46x as long.
COV ?=
test: install-dev kernel
	$(BIN)/python -m pytest -q $(COV)

test-fast: install-dev kernel
	$(BIN)/python -m pytest -q -m "not slow"

figures: install-dev
	$(BIN)/python benchmarks/figures.py --run $(DEMO)

lint: install-dev
	$(BIN)/ruff check cnnlab tests benchmarks examples
	$(BIN)/ruff format --check cnnlab tests benchmarks examples
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format cnnlab tests benchmarks examples
	$(BIN)/ruff check --fix cnnlab tests benchmarks examples

docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "site: site/index.html   (live preview: $(BIN)/mkdocs serve)"

notebooks: install kernel
	$(BIN)/python examples/_build_notebooks.py

clean:
	rm -rf $(VENV) runs build site *.egg-info
