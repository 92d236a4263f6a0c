# ssrp: every target installs what it needs first (make install is instant once done).
#
#   make demo        the whole system end to end on the embedded mini-COCO sample (outputs in demo-out/)
#   make test        the test suite
#   make lint        ruff
#   make bench       the CPU benchmarks (figures in BENCHMARKS.md)
#   make bench-full  every stage at full model size (random weights, built into FULL_MODELS) on CPU
#   make models      fetch the official weights into MODELS (needs internet)
#   make features | augment | parse | corpus   build a corpus:  COCO=dir OUT=dir MODELS=dir RUNNER=local|direct|dataflow
#                    (defaults: the demo sample and tiny models, OUT=demo-out/<target>)
#   make pretrain    stage 1 then stage 2 with the paper's settings: CORPUS=dir RUN=dir BERT=dir VARIANT=cross NPROC=n
#   make image       the Dataflow worker container (needs a Docker engine)

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SSRP := $(PY) -m ssrp
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

COCO ?= demo-out/coco
MODELS ?= demo-out/models
OUT ?=
RUNNER ?= local
VARIANT ?= cross
CORPUS ?= demo-out/corpus
BERT ?= $(MODELS)/bert
ARGS ?=
IMAGE ?= ssrp-worker:latest

.PHONY: install test lint demo bench bench-full models tiny-models sample features augment parse corpus pretrain image clean

install: $(STAMP)

$(STAMP):  # named by the content hash of pyproject.toml and Makefile: no mtime prerequisites
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" setuptools wheel
	# torch first, pinned: the same pins give the CUDA builds on a user's machine
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev]"
	# fairseq 0.12.2 does not import on Python 3.11; the fork builds against the installed torch
	# (no build isolation) and is installed without its stale pins (torchaudio, hydra 1.0).
	$(PIP) install -q --no-deps --no-build-isolation fairseq-fixed==0.12.3.1
	$(PIP) install -q --no-build-isolation fastBPE==0.1.0
	$(PY) -c "import torch, torchvision, apache_beam, stanza, fairseq, fastBPE, lmdb; print('installed: torch', torch.__version__)"
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check ssrp tests bench

bench: install
	$(PY) bench/corpus_read.py
	$(PY) bench/features.py
	$(PY) bench/roi_augment.py
	$(PY) bench/backtranslate.py
	$(PY) bench/parse.py
	$(PY) bench/train.py
	$(PY) bench/pipeline.py

FULL_MODELS ?= bench/out/full-models
bench-full: install
	$(PY) bench/full_size.py --models $(FULL_MODELS) --device cpu

sample: install
	$(SSRP) sample coco $(COCO) --images 8 --seed 0

tiny-models: install
	$(SSRP) models tiny $(MODELS)

models: install
	$(SSRP) models fetch all --to $(MODELS)

# The whole system on the embedded sample with the tiny models. The tiny translators are random, so
# their paraphrases are noise; the demo lifts the length-ratio and <unk> filters so that every caption
# still shows its three variants (a real run keeps the filters on).
demo: install
	rm -rf demo-out
	$(SSRP) sample coco demo-out/coco --images 8 --seed 0
	$(SSRP) models tiny demo-out/models > demo-out/models.json
	touch demo-out/models/.complete
	$(SSRP) build --coco demo-out/coco --models demo-out/models --out demo-out/corpus \
	    --set translate.length_ratio=1e9 --set translate.drop_unk=False
	$(SSRP) corpus verify demo-out/corpus
	$(SSRP) corpus stats demo-out/corpus
	$(SSRP) train stage1 --variant cross --corpus demo-out/corpus --out demo-out/run1 --bert demo-out/models/bert --preset tiny
	$(SSRP) train stage2 --variant cross --corpus demo-out/corpus --out demo-out/run2 --init demo-out/run1/checkpoint.pt --preset tiny
	$(SSRP) eval probe --ckpt demo-out/run2/checkpoint.pt --corpus demo-out/corpus --json demo-out/eval/probe.json
	$(SSRP) show --ckpt demo-out/run2/checkpoint.pt --corpus demo-out/corpus --coco demo-out/coco --out demo-out/eval/figures
	$(SSRP) retrieve --ckpt demo-out/run2/checkpoint.pt --corpus demo-out/corpus --coco demo-out/coco --out demo-out/eval/retrieval
	$(SSRP) export --ckpt demo-out/run2/checkpoint.pt --stage1 demo-out/run1/checkpoint.pt --corpus demo-out/corpus --out demo-out/eval/features.h5
	@echo "demo done: corpus in demo-out/corpus, runs in demo-out/run1 and run2, figures in demo-out/eval/"

clean:
	rm -rf demo-out bench/out .pytest_cache .ruff_cache

# ---- corpus builds: a complete corpus from raw COCO with the stages of each preset -------------
# With the default COCO and MODELS, the embedded sample and the tiny models are made first.
BUILD_DEPS := install
ifeq ($(COCO),demo-out/coco)
BUILD_DEPS += demo-out/coco/annotations/captions_train2017.json
endif
ifeq ($(MODELS),demo-out/models)
BUILD_DEPS += demo-out/models/.complete
endif

demo-out/coco/annotations/captions_train2017.json: | install
	$(SSRP) sample coco demo-out/coco --images 8 --seed 0

demo-out/models/.complete: | install
	$(SSRP) models tiny demo-out/models
	touch $@

features augment parse corpus: $(BUILD_DEPS)
	$(SSRP) build --preset $@ --coco $(COCO) --models $(MODELS) --out $(or $(OUT),demo-out/$@) --runner $(RUNNER) $(ARGS)

# Pretraining with the paper's settings: stage 1 then stage 2 (NPROC>1: torchrun, one process per GPU).
NPROC ?= 1
RUN ?= runs/$(VARIANT)
ifeq ($(NPROC),1)
TRAIN := $(SSRP) train
else
TRAIN := $(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m ssrp train
endif

pretrain: install
	$(TRAIN) stage1 --variant $(VARIANT) --corpus $(CORPUS) --out $(RUN)/stage1 --bert $(BERT) --resume $(ARGS)
	$(TRAIN) stage2 --variant $(VARIANT) --corpus $(CORPUS) --out $(RUN)/stage2 --init $(RUN)/stage1/checkpoint.pt --resume $(ARGS)

image:
	docker build -t $(IMAGE) --build-arg BEAM_VERSION=2.77.0 .
