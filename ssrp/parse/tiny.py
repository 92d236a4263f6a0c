"""Tiny models for offline tests and the demo, in the real packages' layouts.

``build_tiny(models_dir)`` writes

    models_dir/parse/    a Stanza package trained in seconds on ssrp/parse/data/tiny.conllu (34 caption-like
                         sentences with hand-checked UD annotation): tokenizer, POS tagger, dictionary
                         lemmatizer, biaffine depparse and 4-dimensional word vectors, with a resources.json, so
                         Stanza loads it exactly as it loads the real package. A tokenizer trained on 34
                         sentences splits poorly, so its ssrp-parser.json says ``pretokenized`` (ssrp's
                         rule-based tokenizer); ``tokenizer="stanza"`` runs the tiny neural tokenizer.
    models_dir/bert/vocab.txt   a WordPiece vocabulary learned from the mini-COCO sample captions
                         (only if no vocab.txt is there: a fetched BERT vocabulary is never replaced).

Stanza's trainers are run with their own command-line entry points (``stanza.models.tagger.main`` ...).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from importlib import resources

from ssrp.fileutil import md5_file, silenced_output
from ssrp.models.registry import model_folder
from ssrp.parse.models import LANG, NAME, STANZA_VERSION, PackageInfo, write_manifest
from ssrp.parse.wordpiece import train_wordpiece
from ssrp.sample import SampleConfig, write_sample

logger = logging.getLogger(__name__)

PACKAGE = "tiny"
TRAIN_STEPS = 150
TOKENIZER_STEPS = 150
VECTOR_DIM = 4
SAMPLE_IMAGES = 16
TINY_VOCAB_SIZE = 2000
_MODEL_DIMS = [
    "--hidden_dim", "16", "--char_hidden_dim", "16", "--deep_biaff_hidden_dim", "16",
    "--word_emb_dim", "8", "--tag_emb_dim", "4", "--batch_size", "500", "--augment_nopunct", "0.0",
]


def tiny_conllu_path() -> str:
    return str(resources.files("ssrp.parse").joinpath("data/tiny.conllu"))


def conllu_sentences(path: str) -> list[tuple[str, list[str]]]:
    """(text, words) of each sentence of a CoNLL-U file."""
    out, text, words = [], "", []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("# text = "):
                text = line[len("# text = ") :]
            elif line and not line.startswith("#"):
                words.append(line.split("\t")[1])
            elif not line and words:
                out.append((text, words))
                text, words = "", []
    if words:
        out.append((text, words))
    return out


def sample_captions(images: int = SAMPLE_IMAGES, seed: int = 0) -> list[str]:
    """Captions of the mini-COCO sample (ssrp.sample), the texts the demo parses."""

    with tempfile.TemporaryDirectory(prefix="ssrp-sample-") as tmp:
        write_sample(tmp, SampleConfig(images=images, val_images=0, seed=seed))
        with open(os.path.join(tmp, "annotations", "captions_train2017.json"), encoding="utf-8") as fh:
            return [a["caption"] for a in json.load(fh)["annotations"]]


def _write_vectors(path: str, words: set[str], seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{len(words)} {VECTOR_DIM}\n")
        for word in sorted(words):
            fh.write(word + " " + " ".join(f"{rng.uniform(-1, 1):.4f}" for _ in range(VECTOR_DIM)) + "\n")


@contextmanager
def _one_torch_thread():
    """Tiny models train several times faster on one thread than on oversubscribed cores; restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tokenizer_data(conllu: str, workdir: str) -> tuple[str, str, str]:
    """Stanza tokenizer training files: raw text and one label per character (1 end of token, 2 end of
    sentence), two sentences per paragraph so sentence splitting is learned too."""
    sentences, current = [], []
    with open(conllu, encoding="utf-8") as fh:
        for line in fh:
            cols = line.rstrip("\n").split("\t")
            if len(cols) == 10:
                current.append((cols[1], "SpaceAfter=No" not in cols[9]))
            elif not line.strip() and current:
                sentences.append(current)
                current = []
    if current:
        sentences.append(current)
    texts, labels = [], []
    for start in range(0, len(sentences), 2):
        chars, marks = [], []
        group = sentences[start : start + 2]
        for s_idx, sentence in enumerate(group):
            for w_idx, (word, space) in enumerate(sentence):
                last = w_idx == len(sentence) - 1
                chars.append(word)
                marks.append("0" * (len(word) - 1) + ("2" if last else "1"))
                if (space and not last) or (last and s_idx < len(group) - 1):
                    chars.append(" ")
                    marks.append("0")
        texts.append("".join(chars))
        labels.append("".join(marks))
    paths = [os.path.join(workdir, name) for name in ("tok.txt", "tok.label", "tok_mwt.json")]
    for path, content in zip(paths, ("\n\n".join(texts) + "\n\n", "\n\n".join(labels) + "\n\n", "[]"), strict=True):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
    return paths[0], paths[1], paths[2]


def _train_tokenizer(workdir: str, conllu: str, steps: int = TOKENIZER_STEPS, tiny: bool = True) -> str:
    from stanza.models import tokenizer

    txt, label, mwt = _tokenizer_data(conllu, workdir)
    save = os.path.join(workdir, "tokenize.pt")
    dims = ["--hidden_dim", "16", "--emb_dim", "8", "--rnn_layers", "1"] if tiny else []  # else Stanza's defaults
    args = tokenizer.parse_args([
        "--txt_file", txt, "--label_file", label, "--mwt_json_file", mwt, "--dev_txt_file", txt,
        "--dev_label_file", label, "--lang", LANG, "--shorthand", f"{LANG}_tiny", "--save_dir", workdir,
        "--save_name", save, "--steps", str(steps), "--eval_steps", str(steps),
        "--report_steps", "1000", *dims, "--device", "cpu", "--seed", "1234",
    ])
    # the three settings tokenizer.main() derives before it calls train()
    args["feat_funcs"] = ["space_before", "capitalized", "numeric", "end_of_para", "start_of_para"]
    args["feat_dim"] = len(args["feat_funcs"])
    tokenizer.train(args)
    return save


def _train(workdir: str, conllu: str, pretrain: str) -> dict[str, str]:
    """Train tokenizer, POS, lemma and depparse models; returns processor -> model file."""
    from stanza.models import lemmatizer, parser, tagger

    steps = str(TRAIN_STEPS)
    common = [
        "--train_file", conllu, "--eval_file", conllu, "--output_file", os.path.join(workdir, "pred.conllu"),
        "--shorthand", f"{LANG}_tiny", "--save_dir", workdir, "--seed", "1234",
    ]
    deep = common + ["--lang", LANG, "--wordvec_pretrain_file", pretrain, "--max_steps", steps, "--eval_interval", steps,
                     "--log_step", "1000"] + _MODEL_DIMS
    tagger.main(deep + ["--save_name", "pos.pt", "--fix_eval_interval", "--composite_deep_biaff_hidden_dim", "8",
                        "--lr", "0.03"])
    parser.main(deep + ["--save_name", "depparse.pt", "--deep_biaff_output_dim", "8", "--transformed_dim", "8",
                        "--optim", "adam", "--lr", "0.02"])
    lemmatizer.main(common + ["--save_name", "lemma.pt", "--dict_only"])
    files = {name: os.path.join(workdir, f"{name}.pt") for name in ("pos", "depparse", "lemma")}
    return files | {"tokenize": _train_tokenizer(workdir, conllu)}


def _resources(md5: dict[str, str]) -> dict:
    processors = {name: PACKAGE for name in ("tokenize", "pos", "lemma", "depparse")}
    pretrain_dep = [{"model": "pretrain", "package": PACKAGE}]
    return {
        LANG: {
            "lang_name": "English",
            "pos": {PACKAGE: {"md5": md5["pos"], "dependencies": pretrain_dep}},
            "lemma": {PACKAGE: {"md5": md5["lemma"]}},
            "depparse": {PACKAGE: {"md5": md5["depparse"], "dependencies": pretrain_dep}},
            "pretrain": {PACKAGE: {"md5": md5["pretrain"]}},
            "tokenize": {PACKAGE: {"md5": md5["tokenize"]}},
            "default_processors": dict(processors),
            "packages": {"default": dict(processors)},
        }
    }


def build_tiny_parser(models_dir: str) -> dict:
    """Train and install the tiny Stanza package under models_dir/parse; returns its description."""
    from stanza.models.common.pretrain import Pretrain
    from stanza.resources.common import logging_level_context

    out = model_folder(models_dir, NAME)
    conllu = tiny_conllu_path()
    words = {w.lower() for _, ws in conllu_sentences(conllu) for w in ws}
    with (
        tempfile.TemporaryDirectory(prefix="ssrp-tiny-parser-") as work,
        logging_level_context("WARN", None),
        _one_torch_thread(),
        silenced_output(),  # Stanza's training scripts log every step to the root logger
    ):
        vectors, pretrain = os.path.join(work, "vectors.txt"), os.path.join(work, "pretrain.pt")
        _write_vectors(vectors, words)
        Pretrain(pretrain, vectors).load()  # converts the text vectors into Stanza's .pt format
        files = _train(work, conllu, pretrain) | {"pretrain": pretrain}
        for name, src in files.items():
            dest = os.path.join(out, LANG, name, f"{PACKAGE}.pt")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(src, dest)
    md5 = {name: md5_file(os.path.join(out, LANG, name, f"{PACKAGE}.pt")) for name in files}
    with open(os.path.join(out, "resources.json"), "w", encoding="utf-8") as fh:
        json.dump(_resources(md5), fh, indent=1, sort_keys=True)
    info = PackageInfo(
        path=out,
        lang=LANG,
        processors={"tokenize": PACKAGE, "pos": PACKAGE, "lemma": PACKAGE, "depparse": PACKAGE},
        tokenizer="pretokenized",
        stanza_version=STANZA_VERSION,
        tiny=True,
        extra={"train_steps": TRAIN_STEPS, "train_file": "ssrp/parse/data/tiny.conllu"},
    )
    write_manifest(info)
    return {"dir": out, "files": {k: f"{LANG}/{k}/{PACKAGE}.pt" for k in md5}, "md5": md5}


def build_tiny_wordpiece(models_dir: str, texts: list[str] | None = None, vocab_size: int = TINY_VOCAB_SIZE) -> dict:
    """Write models_dir/bert/vocab.txt learned from ``texts`` (default: the sample captions and the tiny
    treebank), unless a vocab.txt is already there."""

    path = os.path.join(models_dir, "bert", "vocab.txt")
    if os.path.exists(path):
        logger.info("%s exists; the WordPiece vocabulary is left as it is", path)
        return {"vocab": path, "written": False}
    if texts is None:
        texts = sample_captions() + [text for text, _ in conllu_sentences(tiny_conllu_path())]
    train_wordpiece(texts, os.path.dirname(path), vocab_size=vocab_size, min_frequency=2)
    with open(path, encoding="utf-8") as fh:
        size = sum(1 for _ in fh)
    return {"vocab": path, "written": True, "vocab_size": size}


def build_tiny(models_dir: str) -> dict:
    """The registry's tiny builder for "parse": the Stanza package and, if absent, the WordPiece vocab."""
    return {"parse": build_tiny_parser(models_dir), "wordpiece": build_tiny_wordpiece(models_dir)}


# --------------------------------------------------------------------------------------------
# The default package's size, random (ssrp.models.fullsize): speed and memory of the real models, not their output.

FULL_PACKAGES = {"tokenize": "combined_nocharlm", "pos": "combined_charlm", "lemma": "combined_nocharlm", "depparse": "combined_charlm",
                 "pretrain": "conll17", "forward_charlm": "1billion", "backward_charlm": "1billion"}
FULL_VECTOR_DIM = 100  # Stanza's English conll17 vectors are 100-d
FULL_PRETRAIN_WORDS = 250_000  # about the size of that vector file (~100 MB); only memory depends on it
FULL_STEPS = 2  # weights stay close to their random start: the models' sizes are what matter here


def _write_full_vectors(path: str, words: set[str], seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = sorted(words) + [f"w{i}" for i in range(FULL_PRETRAIN_WORDS - len(words))]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{len(vocab)} {FULL_VECTOR_DIM}\n")
        for start in range(0, len(vocab), 10_000):
            block = rng.uniform(-1, 1, (min(10_000, len(vocab) - start), FULL_VECTOR_DIM))
            fh.writelines(w + " " + " ".join(f"{x:.3f}" for x in row) + "\n"
                          for w, row in zip(vocab[start : start + 10_000], block, strict=True))


def _train_charlm(workdir: str, text: str, direction: str) -> str:
    from stanza.models import charlm

    save = f"{direction}_charlm.pt"
    charlm.main(["--train_file", text, "--eval_file", text, "--shorthand", f"{LANG}_1billion", "--direction", direction,
                 "--save_dir", workdir, "--save_name", save, "--vocab_save_name", f"{direction}_vocab.pt",
                 "--epochs", "1", "--cutoff", "0", "--batch_size", "4", "--bptt_size", "32", "--no_checkpoint",
                 "--report_steps", "1000", "--device", "cpu", "--seed", "1234"])  # default sizes: 100-d, 1024 hidden
    return os.path.join(workdir, save)


def _train_full(workdir: str, conllu: str, pretrain: str, forward: str, backward: str) -> dict[str, str]:
    """POS and depparse at Stanza's default sizes with the charlms, a couple of steps each; dictionary lemmas."""
    from stanza.models import lemmatizer, parser, tagger

    steps = str(FULL_STEPS)
    common = ["--train_file", conllu, "--eval_file", conllu, "--output_file", os.path.join(workdir, "pred.conllu"),
              "--shorthand", f"{LANG}_combined", "--save_dir", workdir, "--seed", "1234"]
    deep = common + ["--lang", LANG, "--wordvec_pretrain_file", pretrain, "--max_steps", steps, "--eval_interval", steps,
                     "--log_step", "1000", "--charlm", "--charlm_shorthand", f"{LANG}_1billion",
                     "--charlm_forward_file", forward, "--charlm_backward_file", backward]
    tagger.main(deep + ["--save_name", "pos.pt", "--fix_eval_interval"])
    parser.main(deep + ["--save_name", "depparse.pt"])
    lemmatizer.main(common + ["--save_name", "lemma.pt", "--dict_only"])
    files = {name: os.path.join(workdir, f"{name}.pt") for name in ("pos", "depparse", "lemma")}
    return files | {"tokenize": _train_tokenizer(workdir, conllu, steps=FULL_STEPS, tiny=False)}


def _full_resources(md5: dict[str, str]) -> dict:
    """resources.json as Stanza's lists the default English package: pos and depparse depend on the pretrain
    and both charlms."""
    deps = [{"model": kind, "package": FULL_PACKAGES[kind]} for kind in ("pretrain", "forward_charlm", "backward_charlm")]
    entries = {kind: {FULL_PACKAGES[kind]: {"md5": md5[kind]}} for kind in FULL_PACKAGES}
    for kind in ("pos", "depparse"):
        entries[kind][FULL_PACKAGES[kind]]["dependencies"] = deps
    processors = {kind: FULL_PACKAGES[kind] for kind in ("tokenize", "pos", "lemma", "depparse")}
    return {LANG: {"lang_name": "English", **entries, "default_processors": dict(processors),
                   "packages": {"default": dict(processors)}}}


def build_full_size_parser(models_dir: str) -> dict:
    """A Stanza English package at the default package's sizes (random weights) under models_dir/parse.

    Processors and dependencies as Stanza 1.15's default English package (POS and depparse with the forward
    and backward charlms and the 100-d pretrained vectors), each trained for two steps from its random start
    by Stanza's own trainers with their default (published) dimensions. Tokenization is ssrp's rule-based
    one (``pretokenized``; the neural tokenizer is there, at its default size, for ``tokenizer="stanza"``, but
    two steps of training do not teach it to split); the real package's MWT expander and seq2seq lemmatizer
    are not included (dictionary lemmas here)."""
    from stanza.models.common.pretrain import Pretrain
    from stanza.resources.common import logging_level_context

    out = model_folder(models_dir, NAME)
    conllu = tiny_conllu_path()
    sentences = conllu_sentences(conllu)
    words = {w.lower() for _, ws in sentences for w in ws}
    with (
        tempfile.TemporaryDirectory(prefix="ssrp-full-parser-") as work,
        logging_level_context("WARN", None),
    ):
        vectors, pretrain, text = (os.path.join(work, n) for n in ("vectors.txt", "pretrain.pt", "charlm.txt"))
        _write_full_vectors(vectors, words)
        Pretrain(pretrain, vectors).load()
        with open(text, "w", encoding="utf-8") as fh:
            fh.write("\n".join(t for t, _ in sentences) + "\n")
        forward, backward = (_train_charlm(work, text, d) for d in ("forward", "backward"))
        files = _train_full(work, conllu, pretrain, forward, backward)
        files |= {"pretrain": pretrain, "forward_charlm": forward, "backward_charlm": backward}
        for kind, src in files.items():
            dest = os.path.join(out, LANG, kind, f"{FULL_PACKAGES[kind]}.pt")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(src, dest)
    md5 = {kind: md5_file(os.path.join(out, LANG, kind, f"{FULL_PACKAGES[kind]}.pt")) for kind in files}
    with open(os.path.join(out, "resources.json"), "w", encoding="utf-8") as fh:
        json.dump(_full_resources(md5), fh, indent=1, sort_keys=True)
    info = PackageInfo(
        path=out, lang=LANG, processors={k: FULL_PACKAGES[k] for k in ("tokenize", "pos", "lemma", "depparse")},
        tokenizer="pretokenized", stanza_version=STANZA_VERSION, tiny=False,
        extra={"random_full_size": True, "train_steps": FULL_STEPS, "pretrain_words": FULL_PRETRAIN_WORDS},
    )
    write_manifest(info)
    return {"dir": out, "files": {k: f"{LANG}/{k}/{FULL_PACKAGES[k]}.pt" for k in md5}, "md5": md5}
