# Quick start:  make demo   (set up .venv, install, run the demo on the built-in model)
#               make test   (set up .venv, install, run the tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; override e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out
PYTEST_ARGS ?= -q

.PHONY: install demo test clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=64" wheel
	# torch first, so that no other package pulls a CUDA build
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/diffface demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO_OUT)
