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


def _train_tokenizer(workdir: str, conllu: str) -> str:
    from stanza.models import tokenizer

    txt, label, mwt = _tokenizer_data(conllu, workdir)
    save = os.path.join(workdir, "tokenize.pt")
    args = tokenizer.parse_args([
        "--txt_file", txt, "--label_file", label, "--mwt_json_file", mwt, "--dev_txt_file", txt,
        "--dev_label_file", label, "--lang", LANG, "--shorthand", f"{LANG}_tiny", "--save_dir", workdir,
        "--save_name", save, "--steps", str(TOKENIZER_STEPS), "--eval_steps", str(TOKENIZER_STEPS),
        "--report_steps", "1000", "--hidden_dim", "16", "--emb_dim", "8", "--rnn_layers", "1", "--device", "cpu",
        "--seed", "1234",
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
