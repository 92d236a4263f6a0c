# ssrp: every target installs what it needs first (make install is instant once done).
#
#   make demo        the whole system end to end on the embedded mini-COCO sample (outputs in demo-out/)
#   make test        the test suite
#   make lint        ruff
#   make bench       the CPU benchmarks (figures in BENCHMARKS.md)
#   make bench-full  every stage at full model size (random weights, built into FULL_MODELS) on CPU
#   make models      fetch the official weights into MODELS (needs internet)
#   make features | augment | parse | corpus   build a corpus:  COCO=dir OUT=dir MODELS=dir RUNNER=local|direct|dask|dataflow (dask: ARGS="--dask-workers 4")
#                    (defaults: the demo sample and tiny models, OUT=demo-out/<target>)
#   make pretrain    stage 1 then stage 2 with the paper's settings: CORPUS=dir RUN=dir BERT=dir VARIANT=cross NPROC=n
#   make caption     Up-Down captioning (Table 5): KARPATHY=dataset_coco.json CAPTION_FEATURES=corpus|h5|tsv SSRP_CKPT=stage-2
#                    SSRP-Visual checkpoint (BASELINE=1: BUTD features alone) CAPTION_RUN=dir
#   make finetune    TASK=vqa|gqa|nlvr2 with LXMERT's settings: DATA=dir CORPUS=dir (or TSV="a.tsv b.tsv") RUN=dir
#                    FT_FEATURES=f_align+rv+rw BERT=dir NPROC=n (stage-1/2 checkpoints from RUN/stage1, RUN/stage2)
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

.PHONY: install test lint demo bench bench-full models spice tiny-models sample features augment parse corpus pretrain finetune caption image clean

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
	# Java for the COCO caption metrics (the PTB tokenizer and METEOR of pycocoevalcap), from the system packages
	command -v java >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -q \
	    && apt-get install -y -q --no-install-recommends default-jre-headless; } \
	    || echo "warning: no Java; install a JRE for ssrp caption eval (e.g. apt-get install default-jre-headless)"
	$(PY) -c "import torch, torchvision, apache_beam, stanza, fairseq, fastBPE, lmdb, pycocoevalcap; print('installed: torch', torch.__version__)"
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check ssrp tests bench

bench: install
	PYTHONPATH=. $(PY) bench/corpus_read.py
	PYTHONPATH=. $(PY) bench/features.py
	PYTHONPATH=. $(PY) bench/roi_augment.py
	PYTHONPATH=. $(PY) bench/backtranslate.py
	PYTHONPATH=. $(PY) bench/parse.py
	PYTHONPATH=. $(PY) bench/train.py
	PYTHONPATH=. $(PY) bench/finetune.py
	PYTHONPATH=. $(PY) bench/pipeline.py
	PYTHONPATH=. $(PY) bench/caption.py

FULL_MODELS ?= bench/out/full-models
bench-full: install
	PYTHONPATH=. $(PY) bench/full_size.py --models $(FULL_MODELS) --device cpu

sample: install
	$(SSRP) sample coco $(COCO) --images 8 --seed 0

tiny-models: install
	$(SSRP) models tiny $(MODELS)

models: install
	$(SSRP) models fetch all --to $(MODELS)

# SPICE's Stanford CoreNLP 3.6.0 jars (needs internet; pycocoevalcap's own fetcher), for `ssrp caption eval`
spice: install
	$(PY) -m pycocoevalcap.spice.get_stanford_models

# The whole system on the embedded sample with the tiny models: a training corpus (train2017) and a held-out one
# (val2017); pretraining on the first, evaluation on the second. The tiny translators are random, so their
# paraphrases are noise; the demo lifts the length-ratio and <unk> filters so that every caption still shows its
# three variants (a real run keeps the filters on).
DEMO_TRANSLATE := --set translate.length_ratio=1e9 --set translate.drop_unk=False
demo: install
	rm -rf demo-out
	$(SSRP) sample coco demo-out/coco --images 8 --val-images 4 --seed 0
	$(SSRP) models tiny demo-out/models > demo-out/models.json
	touch demo-out/models/.complete
	$(SSRP) build --coco demo-out/coco --split train --models demo-out/models --out demo-out/corpus $(DEMO_TRANSLATE)
	$(SSRP) build --coco demo-out/coco --split val --models demo-out/models --out demo-out/corpus-val $(DEMO_TRANSLATE)
	$(SSRP) corpus verify demo-out/corpus
	$(SSRP) corpus stats demo-out/corpus
	$(SSRP) train stage1 --variant cross --corpus demo-out/corpus --val-corpus demo-out/corpus-val --out demo-out/run1 --bert demo-out/models/bert --preset tiny
	$(SSRP) train stage2 --variant cross --corpus demo-out/corpus --val-corpus demo-out/corpus-val --out demo-out/run2 --init demo-out/run1/checkpoint.pt --preset tiny
	$(SSRP) eval probe --ckpt demo-out/run2/checkpoint.pt --corpus demo-out/corpus-val --json demo-out/eval/probe.json
	$(SSRP) show --ckpt demo-out/run2/checkpoint.pt --corpus demo-out/corpus-val --coco demo-out/coco --out demo-out/eval/figures
	$(SSRP) retrieve --ckpt demo-out/run2/checkpoint.pt --corpus demo-out/corpus-val --coco demo-out/coco --out demo-out/eval/retrieval
	$(SSRP) export --ckpt demo-out/run2/checkpoint.pt --stage1 demo-out/run1/checkpoint.pt --corpus demo-out/corpus-val --out demo-out/eval/features.h5
	$(SSRP) export hf --ckpt demo-out/run2/checkpoint.pt --stage1 demo-out/run1/checkpoint.pt --corpus demo-out/corpus \
	    --vocab demo-out/models/bert/vocab.txt --metrics demo-out/eval/probe.json --metrics demo-out/eval/retrieval/retrieval.json --out demo-out/release
	$(SSRP) features export demo-out/corpus --npz demo-out/eval/npz --hdf5 demo-out/eval/regions.h5
	# captioning (Table 5) needs SSRP-Visual, whose object states do not depend on the caption; its split draws
	# val and test images from every COCO image, so their region features come from a trainval features corpus
	$(SSRP) caption split --coco demo-out/coco --out demo-out/caption/dataset_coco.json --val 2 --test 2
	$(SSRP) -q features --coco demo-out/coco --split trainval --models demo-out/models --out demo-out/caption/features --no-progress
	$(SSRP) -q train stage1 --variant visual --corpus demo-out/corpus --out demo-out/run1v --bert demo-out/models/bert --preset tiny
	$(SSRP) -q train stage2 --variant visual --corpus demo-out/corpus --out demo-out/run2v --init demo-out/run1v/checkpoint.pt --preset tiny
	$(SSRP) caption train --karpathy demo-out/caption/dataset_coco.json --features demo-out/caption/features \
	    --ssrp demo-out/run2v/checkpoint.pt --out demo-out/caption/run --preset tiny --set xe.epochs=50 --set xe.batch_size=2
	$(SSRP) caption eval --run demo-out/caption/run --split test --json demo-out/caption/test_metrics.json --results demo-out/caption/captions_test.json
	# fine-tuning (Tables 3, 4): VQA on a tiny synthetic task set in LXMERT's format
	$(SSRP) finetune sample vqa --corpus demo-out/corpus --out demo-out/tasks/vqa
	$(SSRP) finetune vqa --data demo-out/tasks/vqa --corpus demo-out/corpus --bert demo-out/models/bert \
	    --stage1 demo-out/run1/checkpoint.pt --stage2 demo-out/run2/checkpoint.pt --out demo-out/ft-vqa --preset tiny
	$(SSRP) predict --run demo-out/ft-vqa --split minival
	$(SSRP) predict --run demo-out/ft-vqa --split test
	@echo "demo done: corpora in demo-out/corpus (train) and corpus-val (held out), runs in demo-out/run1 and run2, figures in demo-out/eval/, model in demo-out/release/, captions in demo-out/caption/, VQA fine-tuning in demo-out/ft-vqa"

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

VAL_CORPUS ?=
VAL_ARG = $(if $(VAL_CORPUS),--val-corpus $(VAL_CORPUS))
pretrain: install
	$(TRAIN) stage1 --variant $(VARIANT) --corpus $(CORPUS) $(VAL_ARG) --out $(RUN)/stage1 --bert $(BERT) --resume $(ARGS)
	$(TRAIN) stage2 --variant $(VARIANT) --corpus $(CORPUS) $(VAL_ARG) --out $(RUN)/stage2 --init $(RUN)/stage1/checkpoint.pt --resume $(ARGS)

# Up-Down captioning on SSRP-Visual's refined objects and relations (or BASELINE=1: the BUTD features alone):
# cross-entropy then SCST, resumed where it stopped; then the test-split metrics and the results JSON.
KARPATHY ?= data/dataset_coco.json
CAPTION_FEATURES ?= $(CORPUS)
SSRP_CKPT ?= runs/visual/stage2/checkpoint.pt
CAPTION_RUN ?= runs/caption
BASELINE ?=
CAPTION_ARM := $(if $(BASELINE),--baseline,--ssrp $(SSRP_CKPT))

caption: install
	$(SSRP) caption train --karpathy $(KARPATHY) --features $(CAPTION_FEATURES) $(CAPTION_ARM) --out $(CAPTION_RUN) --resume $(ARGS)
	$(SSRP) caption eval --run $(CAPTION_RUN) --split test --json $(CAPTION_RUN)/test_metrics.json
	$(SSRP) caption predict --run $(CAPTION_RUN) --split test --out $(CAPTION_RUN)/captions_test.json
# Fine-tuning with LXMERT's settings (NPROC>1: torchrun). A pretraining run RUN of `make pretrain` gives the
# stage-1 and stage-2 checkpoints; FT is the fine-tuning run directory.
TASK ?= vqa
DATA ?= data/$(TASK)
FT_FEATURES ?= f_align+rv+rw
FT ?= $(RUN)/$(TASK)-$(subst +,-,$(FT_FEATURES))
TSV ?=
ifeq ($(NPROC),1)
FINETUNE := $(SSRP) finetune
else
FINETUNE := $(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m ssrp finetune
endif
IMAGES := $(if $(TSV),$(foreach f,$(TSV),--tsv $(f)),--corpus $(CORPUS))

finetune: install
	$(FINETUNE) $(TASK) --data $(DATA) $(IMAGES) --bert $(BERT) --stage1 $(RUN)/stage1/checkpoint.pt \
	    --stage2 $(RUN)/stage2/checkpoint.pt --features $(FT_FEATURES) --out $(FT) --resume $(ARGS)

image:
	docker build -t $(IMAGE) --build-arg BEAM_VERSION=2.77.0 .
