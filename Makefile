# Two commands for a fresh machine:  make train  (the embedded default)  and  make test.
# Each bootstraps what is missing: the virtualenv and its pinned packages, and the
# Fashion-MNIST IDX files (Debian's dataset-fashion-mnist where apt-get works, else a download).
# The venv's Python: the first 3.12+ of python3.13, python3.12, python3 (PYTHON=... names one).
# The bootstrap itself is standard-library Python and runs on any python3.
BOOTSTRAP := python3 tools/bootstrap.py
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/fashion_mnist
FMNIST_DIR := /usr/share/datasets/fashion-mnist
FMNIST_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sagan_jax/fashion-mnist

.PHONY: train test test-fast test-plan lint cli-help data venv test-venv plan-venv browser

# cpu, cuda12, cuda13 or tpu: tools/bootstrap.py detects it (nvidia-smi and the driver's CUDA
# version, a TPU chip); ACCELERATOR=... overrides (cuda: the driver's CUDA major). The stamp names
# it, so that another choice reinstalls; the script writes the stamp.
override ACCELERATOR := $(shell $(BOOTSTRAP) --print-accelerator --accelerator='$(ACCELERATOR)')
ifeq ($(ACCELERATOR),)
$(error no accelerator chosen: see the error above)
endif
ACCEL_REQUIREMENTS := $(wildcard requirements-$(ACCELERATOR).txt)  # none for cpu

# venv: what training needs; test-venv adds requirements-test.txt (pytest, ruff, Playwright, the
# PyTorch references), so that make train does not fetch PyTorch.
venv: $(VENV)/.installed-$(ACCELERATOR)
$(VENV)/.installed-$(ACCELERATOR): requirements.txt $(ACCEL_REQUIREMENTS) tools/bootstrap.py
	$(BOOTSTRAP) --venv $(VENV) --accelerator $(ACCELERATOR) --python='$(PYTHON)'

test-venv: $(VENV)/.installed-$(ACCELERATOR)-tests
$(VENV)/.installed-$(ACCELERATOR)-tests: requirements.txt requirements-test.txt benchmarks/pytorch/requirements.txt $(ACCEL_REQUIREMENTS) tools/bootstrap.py
	$(BOOTSTRAP) --venv $(VENV) --accelerator $(ACCELERATOR) --python='$(PYTHON)' --tests

# The TPU and CUDA compilers of python -m sagan_jax.plan (libtpu, JAX's CUDA plugin), in a venv
# of their own: .venv-plan/bin/python -m sagan_jax.plan --config=... --target=v5e-8
plan-venv: .venv-plan/.installed-plan
.venv-plan/.installed-plan: requirements.txt requirements-plan.txt tools/bootstrap.py
	$(BOOTSTRAP) --venv .venv-plan --accelerator plan --python='$(PYTHON)'

data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST_CACHE)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	     (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); then :; \
	else $(PY) -m sagan_jax.fetch_fashion_mnist --dir=$(FMNIST_CACHE); fi

# Trains, scores the run on 10k samples (fid_fmnist, class accuracy, precision/recall/density/
# coverage; the first time also trains the metric's classifier) and writes its report page.
train: venv data
	$(PY) -m sagan_jax.main --config=configs/fashion_mnist.py --workdir=$(WORKDIR)
	$(PY) -m sagan_jax.evaluate --workdir=$(WORKDIR) --num_samples=10000
	$(PY) -m sagan_jax.report --workdir=$(WORKDIR)

# tests/test_report.py drives Debian's chromium (Playwright); installed here as root with apt-get,
# otherwise its browser tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -qq chromium chromium-driver || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	  || echo "chromium not installed: the browser tests of tests/test_report.py will skip"; \
	else echo "not root or no apt-get: the browser tests of tests/test_report.py will skip"; fi

test: test-venv data browser
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# The unit tier alone: no training, no compiled train step, no tool started as a process.
test-fast: test-venv data
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not integration" tests

# The accelerator programs compiled without the accelerators (a TPU topology, an H100 target).
test-plan: plan-venv
	SAGAN_JAX_PLAN_TESTS=1 JAX_PLATFORMS=cpu TPU_SKIP_MDS_QUERY=1 .venv-plan/bin/python -m pytest -q tests/test_plan.py -k compiles_for

# The formatter and the linter, with the settings in pyproject.toml.
lint: test-venv
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

# Each tool's full help, docs/cli/<tool>.txt (tests/test_docs.py fails when one differs from the tool's).
cli-help: test-venv
	$(PY) tools/cli_help.py
