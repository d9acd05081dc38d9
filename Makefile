# Two commands do all setup on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vqkit-installed
DEMO_DATA ?= data/demo-speech
DEMO_RUN  ?= runs/mqgan-refiner-demo
DEMO_PRIOR ?= runs/prior-gpt-demo
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
	$(BIN)/python -m pip install -q -e ".[audio,image,test,export]"
	touch $@

install: $(STAMP)

# Debian packages for the demo corpus (real speech; espeak-ng as the fallback). Best effort:
# without root the demo falls back or says clearly what is missing.
system-deps:
	@bash scripts/install-system-deps.sh

test-system-deps:
	@bash scripts/install-system-deps.sh --with-browser

# The tokenizer, then a small GPT prior over its tokens: samples and SeQ-GAN's teacher-forced
# visualisation go into the report folder, which `vqkit eval` links.
demo: install system-deps
	$(BIN)/vqkit data demo-speech $(DEMO_DATA)
	$(BIN)/vqkit train --preset mqgan-refiner --data $(DEMO_DATA)/train --valid-data $(DEMO_DATA)/heldout --out $(DEMO_RUN)
	$(BIN)/vqkit encode $(DEMO_RUN) $(DEMO_DATA)/train -o $(DEMO_RUN)/tokens/train --quiet
	$(BIN)/vqkit encode $(DEMO_RUN) $(DEMO_DATA)/heldout -o $(DEMO_RUN)/tokens/heldout --quiet
	$(BIN)/vqkit train-prior --preset prior-gpt --tokenizer $(DEMO_RUN) --tokens $(DEMO_RUN)/tokens/train --valid-tokens $(DEMO_RUN)/tokens/heldout --out $(DEMO_PRIOR)
	$(BIN)/vqkit sample $(DEMO_PRIOR) -n 8 --top-k 100 -o $(DEMO_RUN)/report/prior-samples
	$(BIN)/vqkit visualize-prior $(DEMO_PRIOR) --tokens $(DEMO_RUN)/tokens/heldout -o $(DEMO_RUN)/report/prior-visualisation
	$(BIN)/vqkit eval $(DEMO_RUN) --data $(DEMO_DATA)/heldout --out $(DEMO_RUN)/report

# The image part: a small image tokenizer on the photographs bundled with scikit-image.
demo-images: install
	$(BIN)/vqkit data demo-images $(IMAGE_DATA)
	$(BIN)/vqkit train --preset $(IMAGE_PRESET) --data $(IMAGE_DATA)/train --valid-data $(IMAGE_DATA)/heldout --out $(IMAGE_RUN)
	$(BIN)/vqkit eval $(IMAGE_RUN) --data $(IMAGE_DATA)/heldout --out $(IMAGE_RUN)/report

test: install test-system-deps
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_RUN) $(DEMO_PRIOR) $(IMAGE_DATA) $(IMAGE_RUN)
