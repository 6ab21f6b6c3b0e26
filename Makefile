# Two commands for a fresh machine:  make train  (the embedded default)  and  make test.
# Each bootstraps what is missing: the virtualenv and its pinned packages, and the
# Fashion-MNIST IDX files (Debian's dataset-fashion-mnist where apt-get works, else a download).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/fashion_mnist
FMNIST_DIR := /usr/share/datasets/fashion-mnist
FMNIST_CACHE := $(HOME)/.cache/sagan_jax/fashion-mnist

.PHONY: train test data venv

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	touch $@

data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST_CACHE)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	     (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); then :; \
	else $(PY) -m sagan_jax.fetch_fashion_mnist $(FMNIST_CACHE); fi

train: venv data
	$(PY) -m sagan_jax.main --config=configs/fashion_mnist.py --workdir=$(WORKDIR)

test: venv data
	$(PY) -m pytest -q -n 2 --dist loadfile tests
