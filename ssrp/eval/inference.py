"""Running a trained SSRP model over corpus records: relation matrices, projections and features.

``ProbeModel(ckpt, corpus, cfg, stage1=None)`` is cheap; ``load()`` reads the stage-2 checkpoint (the
frozen encoder and the probes) and, when given, the stage-1 checkpoint whose g_align head makes f_align
(Eq. 4; stage 2 does not keep it). ``model(pairs)`` returns one ``Output`` per (image view, caption
variant) pair, in order; ``model.run(pairs)`` does the same in batches with a progress bar.

Inputs are prepared exactly as the trainer prepares them (``ssrp.train.data``): at most
``data.max_objects`` RoIs with boxes normalised by the view's size, captions cut to ``data.max_tokens``
WordPieces, word vectors as the mean of their pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssrp.corpus import CorpusReader
from ssrp.devices import resolve_device
from ssrp.eval.config import EvalConfig
from ssrp.eval.labels import ClassNames
from ssrp.train.checkpoint import load_checkpoint, train_config_of
from ssrp.train.config import TrainConfig
from ssrp.train.data import Collate, CorpusRecords, fit_text
from ssrp.train.heads import AlignHead, upper_triangle
from ssrp.train.steps import Stage2Model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """One image view and one caption variant to run the model on."""

    image_id: int
    caption_id: int
    view: str = "raw"
    variant: str = "raw"


@dataclass
class Output:
    """What the model says about one pair (numpy, on the CPU); W words, N objects."""

    pair: Pair
    words: tuple[str, ...]  # the caption's words (cut like the trainer cuts them)
    upos: tuple[str, ...]
    heads: np.ndarray  # int [W] 1-based parser heads (0 = root)
    gold: np.ndarray  # float [W, W] the parser's tree distances
    r_w: np.ndarray  # float [W, W] R_w, squared probe distances between words
    r_v: np.ndarray  # float [N, N] R_v, squared probe distances between objects
    objects: np.ndarray  # float [N, H] refined object features (the encoder's object states)
    z_w: np.ndarray  # float [P] projection of vec(R_w)
    z_v: np.ndarray  # float [P] projection of vec(R_v)
    f_align: np.ndarray | None  # float [H] g_align output (Eq. 4), None without the stage-1 head


class ProbeModel:
    def __init__(self, ckpt: str, corpus: str, cfg: EvalConfig | None = None, stage1: str | None = None):
        self.ckpt_path = ckpt
        self.corpus = corpus
        self.cfg = cfg or EvalConfig()
        self.stage1_path = stage1
        self.train_cfg: TrainConfig | None = None
        self.model: Stage2Model | None = None
        self.align: AlignHead | None = None
        self.records: CorpusRecords | None = None
        self.trained_on: list[dict] = []  # the corpora the checkpoint was trained on (stage 1, then stage 2)
        self.names = ClassNames()  # the corpus's detector vocabularies (after load)
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------------------------------
    # Loading

    def load(self) -> ProbeModel:
        ckpt = load_checkpoint(self.ckpt_path)
        if ckpt.get("stage") != "stage2":
            raise ValueError(
                f"{self.ckpt_path} is a {ckpt.get('stage')} checkpoint; the probes are trained in stage 2: "
                "pass the stage-2 run's checkpoint.pt"
            )
        cfg = train_config_of(ckpt)
        model = Stage2Model(cfg)
        model.load_state_dict(ckpt["model"])
        self.device = resolve_device(self.cfg.device)
        self.model = model.to(self.device).eval()
        self.align = self._load_align(cfg, ckpt["model"])
        self.train_cfg = cfg
        self.trained_on = ckpt.get("corpora", [])
        self.records = CorpusRecords(self.corpus, cfg.data, cfg.model)
        self.names = ClassNames.from_manifest(self.records.reader.manifest)
        logger.info("loaded SSRP-%s stage-2 model from %s (step %s) on %s%s", cfg.model.variant, self.ckpt_path,
                    ckpt.get("step"), self.device, "" if self.align is None else ", with g_align")
        return self

    def _load_align(self, cfg: TrainConfig, stage2_state: dict) -> AlignHead | None:
        state = {k.removeprefix("align."): v for k, v in stage2_state.items() if k.startswith("align.")}
        if not state and self.stage1_path:
            s1 = load_checkpoint(self.stage1_path)
            if s1.get("stage") != "stage1":
                raise ValueError(f"--stage1 {self.stage1_path} is a {s1.get('stage')} checkpoint, not stage 1")
            check_same_encoder(s1["model"], stage2_state, self.stage1_path)
            state = {k.removeprefix("align."): v for k, v in s1["model"].items() if k.startswith("align.")}
        if not state:
            return None
        head = AlignHead(cfg.model)
        head.load_state_dict(state)
        return head.to(self.device).eval()

    @property
    def reader(self) -> CorpusReader:
        self._need_loaded()
        return self.records.reader

    @property
    def hidden(self) -> int:
        self._need_loaded()
        return self.train_cfg.model.hidden

    def _need_loaded(self) -> None:
        if self.model is None:
            raise RuntimeError("ProbeModel.load() must be called first")

    # ------------------------------------------------------------------------------------------
    # Inputs

    def sample(self, pair: Pair) -> tuple[dict[str, np.ndarray], object]:
        """The trainer's arrays for one pair, and the text record (words, upos, heads)."""
        img = self.records.image(pair.image_id, pair.view)
        rec = _text_record(self.records.reader, pair.caption_id, pair.variant)
        ids, pw, td = fit_text(rec, self.train_cfg.data.max_tokens)
        sample = {"input_ids": ids, "piece_word": pw, "tree_dist": td,
                  "features": img["features"], "boxes": img["boxes"]}
        return sample, rec

    def collate(self, samples: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
        batch = Collate("stage2", self.train_cfg.data.pad_id).common(samples)
        t = batch["input_ids"].shape[1]
        pw = np.full((len(samples), t), -1, np.int64)
        for i, s in enumerate(samples):
            pw[i, : len(s["piece_word"])] = s["piece_word"]
        words = max(1, max(s["tree_dist"].shape[0] for s in samples))
        batch["piece_word"] = torch.from_numpy(pw)
        batch["tree_dist"] = torch.zeros((len(samples), words, words), dtype=torch.int16)  # only its size is read
        return {k: v.to(self.device) for k, v in batch.items()}

    # ------------------------------------------------------------------------------------------
    # Running

    @torch.no_grad()
    def __call__(self, pairs: list[Pair]) -> list[Output]:
        self._need_loaded()
        if not pairs:
            return []
        prepared = [self.sample(p) for p in pairs]
        batch = self.collate([s for s, _ in prepared])
        enc, heads = self.model.encoder, self.model.heads
        text, objects = enc(batch["input_ids"], batch["text_mask"], batch["features"], batch["boxes"],
                            batch["object_mask"])
        text, objects = text.float(), objects.float()
        rel = heads.relations(text, objects, batch)
        size = heads.cfg.max_nodes
        z_w = heads.text_proj(upper_triangle(rel["r_w"], rel["word_mask"], size))
        z_v = heads.visual_proj(upper_triangle(rel["r_v"], rel["object_mask"], size))
        f_align = self.align.f_align(text, objects, batch["object_mask"]) if self.align is not None else None
        return [
            self._output(pair, sample, rec, i, rel, objects, z_w, z_v, f_align)
            for i, (pair, (sample, rec)) in enumerate(zip(pairs, prepared, strict=True))
        ]

    def _output(self, pair, sample, rec, i, rel, objects, z_w, z_v, f_align) -> Output:
        w = sample["tree_dist"].shape[0]
        n = len(sample["features"])
        cpu = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
        return Output(
            pair=pair,
            words=tuple(rec.words[:w]),
            upos=tuple(rec.upos[:w]),
            heads=np.asarray(rec.heads[:w], np.int64),
            gold=np.asarray(sample["tree_dist"], np.float32),
            r_w=cpu(rel["r_w"][i, :w, :w]),
            r_v=cpu(rel["r_v"][i, :n, :n]),
            objects=cpu(objects[i, :n]),
            z_w=cpu(z_w[i]),
            z_v=cpu(z_v[i]),
            f_align=None if f_align is None else cpu(f_align[i]),
        )

    def run(self, pairs: Iterable[Pair], desc: str = "pairs", total: int | None = None) -> Iterator[Output]:
        """Outputs of every pair, in order, computed ``batch_size`` pairs at a time."""
        from tqdm import tqdm

        pairs = list(pairs)
        bar = tqdm(total=total or len(pairs), desc=desc, unit="pair", disable=not self.cfg.progress)
        try:
            for start in range(0, len(pairs), self.cfg.batch_size):
                chunk = pairs[start : start + self.cfg.batch_size]
                yield from self(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()


def _text_record(reader: CorpusReader, caption_id: int, variant: str):
    try:
        return reader.text(caption_id, variant)
    except KeyError:
        if variant == "raw":
            raise
        return reader.text(caption_id, "raw")


def check_same_encoder(stage1_state: dict, stage2_state: dict, path: str) -> None:
    """The stage-1 checkpoint must be the one the stage-2 run was initialised from (same frozen encoder)."""
    for key, value in stage2_state.items():
        if key.startswith("encoder."):
            other = stage1_state.get(key)
            if other is None or other.shape != value.shape or not torch.equal(other, value):
                raise ValueError(
                    f"--stage1 {path}: its encoder differs from the stage-2 checkpoint's at {key}; "
                    "pass the stage-1 checkpoint the stage-2 run was started from (--init)"
                )
