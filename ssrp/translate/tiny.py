"""Tiny random-weight fairseq translation models, in exactly the official WMT19 layout.

Each direction gets ``model.pt`` (a legacy-style checkpoint whose ``args`` is an argparse.Namespace,
like the 2019 WMT19 checkpoints, so it needs the same gated full unpickle), ``dict.<src>.txt``,
``dict.<tgt>.txt`` and fastBPE ``bpecodes``; en-de/de-en share one joined dictionary (as the official
"joined-dict" models do), en-ru/ru-en have separate ones. The models are built with fairseq's own
parser and task (recipe of /work/shared/notes/text.md §1.7): 1+1 layers, width 16.

The BPE codes merge a small caption vocabulary into whole words; single characters (with and without
``@@``) stay in the dictionaries, so any caption in these alphabets encodes without ``<unk>``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter

from ssrp.fileutil import sha256_file, silenced_output
from ssrp.models.trust import write_checksums
from ssrp.translate.models import DIRECTIONS, Direction, require_fairseq, translation_dir

logger = logging.getLogger(__name__)

WORDS = {
    "en": (
        "a an the A The There is are of on in with and to at near next behind front under above beside by "
        "man woman person people child boy girl dog dogs cat cats horse bird birds bus car train boat kite pizza "
        "umbrella table field street beach lake park kitchen water grass sky plate food red blue green yellow "
        "white black brown orange large small two three standing sitting walking lying playing waiting resting "
        "riding holding eating looking flying parked it its his her their up down close Close objects"
    ),
    "de": (
        "ein eine einen der die das Ein Eine Der Die Das ist sind auf im in mit und neben hinter vor unter am "
        "Mann Frau Person Leute Kind Hund Hunde Katze Pferd Vogel Bus Auto Zug Boot Drachen Pizza Schirm Tisch "
        "Feld Straße Strand See Park Küche Wasser rot blau grün gelb weiß schwarz braun zwei drei steht sitzt "
        "läuft liegt spielt wartet reitet hält isst über größer Nahaufnahme"
    ),
    "ru": (
        "и в на с у под над за рядом перед возле Мужчина мужчина Женщина женщина человек люди ребёнок собака "
        "собаки кошка лошадь птица автобус машина поезд лодка змей пицца зонт стол поле улица пляж озеро парк "
        "кухня вода красный синий зелёный жёлтый белый чёрный два три стоит сидит идёт лежит играет ждёт едет "
        "держит ест Крупный план"
    ),
}
ALPHABETS = {
    "en": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "de": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZäöüßÄÖÜ",
    "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ",
}
# Moses output symbols (fairseq's Moses tokenizer escapes by default; dashes become @-@).
SYMBOLS = ". , ! ? : ; ( ) - @-@ &apos; &quot; &amp; &#91; &#93; % / 0 1 2 3 4 5 6 7 8 9".split()
ARCH = [
    "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
    "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--max-source-positions", "256", "--max-target-positions", "256",
]  # fmt: skip
SEED = {"en-de": 11, "de-en": 12, "en-ru": 13, "ru-en": 14}
# The published WMT19 models (ssrp.models.fullsize): transformer big with a wider encoder FFN, 6+6 layers, and
# the sizes of their dictionaries (len(fairseq Dictionary), specials included): en-de/de-en share one joined
# dictionary; en-ru/ru-en have one per language (shared/notes/text.md §1.1; the FSMT ports' configs).
FULL_ARCH = [
    "--arch", "transformer_vaswani_wmt_en_de_big", "--encoder-layers", "6", "--decoder-layers", "6",
    "--encoder-embed-dim", "1024", "--decoder-embed-dim", "1024",
    "--encoder-ffn-embed-dim", "8192", "--decoder-ffn-embed-dim", "4096",
    "--encoder-attention-heads", "16", "--decoder-attention-heads", "16",
    "--max-source-positions", "1024", "--max-target-positions", "1024",
]  # fmt: skip
FULL_DICT_SIZES = {"de": {"en": 42024, "de": 42024}, "ru": {"en": 31640, "ru": 31232}}


def build_tiny(models_dir: str, arch: list[str] | None = None, dict_sizes: dict | None = None,
               source: str = "build_tiny") -> dict:
    """Write MODELS/translate/{en-de,de-en,en-ru,ru-en} and a signed checksums.json.

    ``arch`` (fairseq arguments) and ``dict_sizes`` (pivot -> language -> dictionary length, padded with
    fairseq's ``madeupword`` entries) give other sizes: ``FULL_ARCH`` and ``FULL_DICT_SIZES`` are the
    published models' (random weights, same files)."""
    root = translation_dir(models_dir)
    codes = {"de": _learn_codes(WORDS["en"] + " " + WORDS["de"]), "ru": _learn_codes(WORDS["en"] + " " + WORDS["ru"])}
    files = {}
    for d in DIRECTIONS.values():  # fairseq's and fastBPE's chatter silenced below
        folder = os.path.join(root, d.name)
        os.makedirs(folder, exist_ok=True)
        pivot = d.tgt if d.src == "en" else d.src
        _write_lines(os.path.join(folder, "bpecodes"), [f"{a} {b} {n}" for a, b, n in codes[pivot]])
        with silenced_output():
            _write_dicts(folder, d, codes[pivot], (dict_sizes or {}).get(pivot))
            _write_checkpoint(folder, d, arch or ARCH)
        digest = sha256_file(os.path.join(folder, "model.pt"))
        files[f"{d.name}/model.pt"] = {"sha256": digest, "source": source}
    write_checksums(root, files, written_by=f"ssrp.translate.tiny:{source}")
    logger.info("tiny translation models written under %s", root)
    return {"dir": root, "files": files}


# --------------------------------------------------------------------------------------------
# BPE codes and dictionaries.


def _learn_codes(text: str) -> list[tuple[str, str, int]]:
    """fastBPE codes that merge each listed word into one token (left to right, ``</w>`` at the end)."""
    codes: list[tuple[str, str, int]] = []
    seen: set[tuple[str, str]] = set()
    for word in dict.fromkeys(text.split()):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in seen:
                seen.add((left, right))
                codes.append((left, right, 0))
            left = left + right
    n = len(codes)
    return [(a, b, 1000 + n - i) for i, (a, b, _) in enumerate(codes)]  # counts descending, like learnt codes


def _vocabulary(langs: tuple[str, ...], codes: list[tuple[str, str, int]]) -> list[str]:
    """Every piece fastBPE can emit for these languages: whole words, merged prefixes, characters."""
    import fastBPE

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "codes")
        _write_lines(path, [f"{a} {b} {n}" for a, b, n in codes])
        bpe = fastBPE.fastBPE(path)
        words = " ".join(WORDS[lang] for lang in langs).split()
        pieces = Counter(p for line in bpe.apply(words) for p in line.split())
    for lang in langs:
        for ch in ALPHABETS[lang]:
            pieces.update([ch, ch + "@@"])
    pieces.update(SYMBOLS)
    return [tok for tok, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0]))]


def _write_dicts(folder: str, d: Direction, codes: list[tuple[str, str, int]], sizes: dict | None = None) -> None:
    joined = "de" in (d.src, d.tgt)  # the official en-de/de-en models are joined-dict, en-ru/ru-en are not
    for lang in (d.src, d.tgt):
        langs = (d.src, d.tgt) if joined else (lang,)
        vocab = _vocabulary(langs, codes)
        if sizes:  # fairseq's Dictionary adds 4 specials; the published dictionaries pad with madeupwordNNNN
            pad = sizes[lang] - 4 - len(vocab)
            if pad < 0:
                raise ValueError(f"dictionary size {sizes[lang]} is smaller than the {len(vocab) + 4} entries needed")
            vocab += [f"madeupword{i:04d}" for i in range(pad)]
        _write_lines(
            os.path.join(folder, f"dict.{lang}.txt"), [f"{tok} {len(vocab) - i}" for i, tok in enumerate(vocab)]
        )


def _write_lines(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# The checkpoint.


def _write_checkpoint(folder: str, d: Direction, arch: list[str]) -> None:
    """Build the model with fairseq's parser and task; save it like a 2019 fairseq checkpoint."""
    import torch

    require_fairseq()
    from fairseq import options, tasks

    share = ["--share-all-embeddings"] if "de" in (d.src, d.tgt) else ["--share-decoder-input-output-embed"]
    argv = [folder, "--task", "translation", "--source-lang", d.src, "--target-lang", d.tgt, "--cpu", *arch, *share]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    state = torch.get_rng_state()
    try:
        torch.manual_seed(SEED[d.name])
        task = tasks.setup_task(args)
        model = task.build_model(args)
    finally:
        torch.set_rng_state(state)
    args.data = "."  # like the official checkpoints: the data dir is given again at load time
    checkpoint = {
        "args": args,
        "model": model.state_dict(),
        "optimizer_history": [
            {
                "criterion_name": "LabelSmoothedCrossEntropyCriterion",
                "optimizer_name": "FP16Optimizer",
                "lr_scheduler_state": {"best": None},
                "num_updates": 0,
            }
        ],
        "extra_state": {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }
    torch.save(checkpoint, os.path.join(folder, "model.pt"))
