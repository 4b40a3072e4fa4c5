# Quick start:  make demo   (set up .venv, install, run the demo on the built-in model)
#               make test   (set up .venv, install, run the tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; override e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out
PYTEST_ARGS ?= -q

P3D_VENV ?= .venv-p3d

.PHONY: install demo test test-pytorch3d bench clean

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

# PyTorch3D parity (own venv: Python 3.11, torch 2.2.2, pipablepytorch3d 0.7.6; ~5 GB of wheels)
$(P3D_VENV)/.installed: tools/setup_pytorch3d_env.sh setup.py pyproject.toml
	tools/setup_pytorch3d_env.sh $(P3D_VENV)
	touch $@

test-pytorch3d: $(P3D_VENV)/.installed
	DIFFFACE_REQUIRE_PYTORCH3D=1 $(P3D_VENV)/bin/python -m pytest $(PYTEST_ARGS) tests/renderers/test_pytorch3d_parity.py
	$(P3D_VENV)/bin/python benchmarks/bench_render.py --quick

bench: install
	$(PY) benchmarks/bench_render.py

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO_OUT)
