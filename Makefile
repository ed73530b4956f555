# Two entry points: `make demo` and `make test`. Both create .venv when needed.
# `make test-fast` runs the fast tier (tests not marked slow) in under two minutes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test test-fast lint install clean default-model

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision pinned; pip takes them from this machine kind's local wheel cache
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	# everything: training (PyTorch, ONNX export) and the tests; `pip install .` alone is the
	# light install (ONNX Runtime, no PyTorch)
	$(PY) -m pip install -q -e '.[train,test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hypermodal demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# The bundled default model and its model card: cross-validation by dataset on the bundled
# corpus and its simulations, then the final model trained on everything (28 min on 2 cores).
# crossval writes the PyTorch checkpoint and its ONNX bundle; only the bundle (and card) ship.
default-model: $(STAMP)
	$(VENV)/bin/hypermodal crossval --out runs/default \
	    --save-model runs/default/model/hypermodal-default.pt
	cp runs/default/model/hypermodal-default.onnx.zip runs/default/model/MODEL_CARD.md \
	    src/hypermodal/default_model/

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .cache demo-out
