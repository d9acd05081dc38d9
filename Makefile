# Two commands do all setup on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vqkit-installed
DEMO_DATA ?= data/demo-speech
DEMO_RUN  ?= runs/mqgan-refiner-demo
IMAGE_DATA   ?= data/demo-images
IMAGE_PRESET ?= vqgan-l2
IMAGE_RUN    ?= runs/$(IMAGE_PRESET)-demo

.PHONY: demo demo-images test install system-deps test-system-deps clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch==2.13.0 first when torch is absent: an unpinned torch would pull multi-GB CUDA wheels.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[audio,image,test]"
	touch $@

install: $(STAMP)

# Debian packages for the demo corpus (real speech; espeak-ng as the fallback). Best effort:
# without root the demo falls back or says clearly what is missing.
system-deps:
	@bash scripts/install-system-deps.sh

test-system-deps:
	@bash scripts/install-system-deps.sh --with-browser

demo: install system-deps
	$(BIN)/vqkit data demo-speech $(DEMO_DATA)
	$(BIN)/vqkit train --preset mqgan-refiner --data $(DEMO_DATA)/train --valid-data $(DEMO_DATA)/heldout --out $(DEMO_RUN)
	$(BIN)/vqkit eval $(DEMO_RUN) --data $(DEMO_DATA)/heldout --out $(DEMO_RUN)/report

# The image part: a small image tokenizer on the photographs bundled with scikit-image.
demo-images: install
	$(BIN)/vqkit data demo-images $(IMAGE_DATA)
	$(BIN)/vqkit train --preset $(IMAGE_PRESET) --data $(IMAGE_DATA)/train --valid-data $(IMAGE_DATA)/heldout --out $(IMAGE_RUN)
	$(BIN)/vqkit eval $(IMAGE_RUN) --data $(IMAGE_DATA)/heldout --out $(IMAGE_RUN)/report

test: install test-system-deps
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_RUN) $(IMAGE_DATA) $(IMAGE_RUN)
