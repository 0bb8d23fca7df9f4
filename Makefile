# Two commands do all set-up on a fresh machine:
#   make demo   -> .venv + install, then the main job on the built-in synthetic cohort
#   make test   -> .venv + install, then ruff and the test suite
#
# Torch: with no NVIDIA GPU visible we pin torch==$(CPU_TORCH_VERSION) through a constraints file, which
# on this project's build machines resolves to the local CPU wheel (a bare `torch` would pull a
# multi-GB CUDA build). With a GPU (nvidia-smi present) nothing is pinned and pip picks its default
# CUDA build. Override with `make TORCH_CONSTRAINT='torch==X.Y.Z' ...` or TORCH_CONSTRAINT= to unpin.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CPU_TORCH_VERSION ?= 2.13.0
TORCH_CONSTRAINT ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,torch==$(CPU_TORCH_VERSION))
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean

$(VENV)/.installed: setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	printf '%s\n' "$(TORCH_CONSTRAINT)" > $(VENV)/constraints.txt
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel -c $(VENV)/constraints.txt
	$(PY) -m pip install --quiet -c $(VENV)/constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/monai-stroke demo --out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache *.egg-info
