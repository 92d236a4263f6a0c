"""Synthetic corpora for the trainer tests: parsed captions with random dependency trees whose
input_ids / piece_word / tree_dist are consistent, and image records with several views."""

from __future__ import annotations

import numpy as np

from ssrp.corpus import CorpusPlan, ImageRecord, IndexRecord, TextRecord, encode, write_corpus
from ssrp.parse.trees import tree_distances as parse_tree_distances

FEATURE_DIM = 16
NUM_LABELS = 20


def tree_distances(heads: np.ndarray) -> np.ndarray:
    """uint8 word distances in the tree (the parse stage's routine; tested against a brute force there)."""
    return parse_tree_distances(heads).astype(np.uint8)


def random_heads(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-based heads of a random tree over n words (0 = root)."""
    order = rng.permutation(n)
    heads = np.zeros(n, np.int32)
    for k in range(1, n):
        heads[order[k]] = order[rng.integers(k)] + 1
    return heads


def vocab_ids(vocab: list[str]) -> dict[str, int]:
    return {tok: i for i, tok in enumerate(vocab)}


def make_text(
    caption_id: int, image_id: int, variant: str, vocab: list[str], rng: np.random.Generator, n_words: int | None = None
) -> TextRecord:
    ids = vocab_ids(vocab)
    plain = [t for t in vocab if not t.startswith("[") and not t.startswith("##")]
    suffix = [t for t in vocab if t.startswith("##")]
    n = n_words or int(rng.integers(3, 12))
    words = tuple(plain[int(rng.integers(len(plain)))] for _ in range(n))
    input_ids, piece_word = [ids["[CLS]"]], [-1]
    for w, word in enumerate(words):
        input_ids.append(ids[word])
        piece_word.append(w)
        if suffix and rng.random() < 0.3:  # a word of two WordPieces
            input_ids.append(ids[suffix[int(rng.integers(len(suffix)))]])
            piece_word.append(w)
    input_ids.append(ids["[SEP]"])
    piece_word.append(-1)
    heads = random_heads(rng, n)
    return TextRecord(
        caption_id=caption_id,
        image_id=image_id,
        variant=variant,
        text=" ".join(words),
        words=words,
        upos=("NOUN",) * n,
        deprels=tuple("root" if h == 0 else "dep" for h in heads),
        heads=heads,
        input_ids=np.array(input_ids, np.int32),
        piece_word=np.array(piece_word, np.int32),
        tree_dist=tree_distances(heads),
    )


def make_image(image_id: int, view: str, rng: np.random.Generator, n: int | None = None) -> ImageRecord:
    n = int(rng.integers(4, 10)) if n is None else n
    xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
    return ImageRecord(
        image_id=image_id,
        view=view,
        height=240,
        width=320,
        boxes=np.concatenate([xy, xy + rng.uniform(5, 100, (n, 2)).astype(np.float32)], 1),
        features=rng.standard_normal((n, FEATURE_DIM)).astype(np.float16),
        obj_ids=rng.integers(0, NUM_LABELS, n).astype(np.int32),
        obj_conf=rng.uniform(0.2, 1, n).astype(np.float32),
        attr_ids=rng.integers(0, 10, n).astype(np.int32),
        attr_conf=rng.uniform(0, 1, n).astype(np.float32),
        file_name=f"{image_id:012d}.jpg",
    )


def build_corpus(
    root: str,
    vocab: list[str],
    n_images: int = 24,
    captions: int = 2,
    views: tuple[str, ...] = ("raw", "hflip", "rot90"),
    variants: tuple[str, ...] = ("raw", "de", "ru"),
    seed: int = 0,
    unparsed: tuple[int, ...] = (),
    missing: tuple[int, ...] = (),
) -> str:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(1, n_images + 1):
        for view in views:
            r = make_image(i, view, rng)
            records.append((r.key, encode(r)))
        caps = [i * 100 + k for k in range(captions)]
        for c in caps:
            for variant in variants:
                t = make_text(c, i, variant, vocab, rng)
                if c in unparsed:
                    t = TextRecord(caption_id=c, image_id=i, variant=variant, text=t.text)
                if c not in missing:
                    records.append((t.key, encode(t)))
        ix = IndexRecord(
            image_id=i, caption_ids=np.array(caps, np.int64), file_name=f"{i:012d}.jpg", height=240, width=320
        )
        records.append((ix.key, encode(ix)))
    write_corpus(root, CorpusPlan({"image": 2, "text": 2, "index": 1}, config={"test": "train", "seed": seed}), records)
    return root


# ------------------------------------------------------------------------------------------------
# DDP: run in spawned processes (importable by module name)

DDP_OVERRIDES = (f"model.num_object_labels={NUM_LABELS}", "model.dropout=0.0", "optim.batch_size=8")


def ddp_batch(stage: str, corpus: str, cfg, rows: range):
    """The collated batch of pairs ``rows`` (sample keys (index, epoch 0)), built as the loader would."""
    from ssrp.corpus import CorpusReader
    from ssrp.train.data import Collate, Stage1Dataset, Stage2Dataset, load_pairs

    with CorpusReader(corpus) as reader:
        pairs = load_pairs(reader)
        views, variants = tuple(reader.views()), tuple(reader.variants())
    args = (corpus, pairs, views, variants, cfg.data, cfg.model, cfg.seed)
    ds = Stage1Dataset(*args, stage1=cfg.stage1) if stage == "stage1" else Stage2Dataset(*args)
    return Collate(stage, cfg.data.pad_id)([ds[(i, 0)] for i in rows])


def ddp_gradients(stage: str, corpus: str, bert: str, info, rows: range) -> dict:
    """Gradients of one step of SSRP-Cross on the pairs ``rows`` (averaged over ranks by DDP)."""
    from ssrp.train.config import make_config
    from ssrp.train.steps import build_run, compute_losses, resolve_config

    cfg = resolve_config(make_config(stage, "cross", "tiny", list(DDP_OVERRIDES)), corpus, bert, None)
    run = build_run(cfg, info, total_steps=10, bert=bert)
    total, _ = compute_losses(run, ddp_batch(stage, corpus, cfg, rows))
    total.backward()
    return {k: p.grad.clone() for k, p in run.model.named_parameters() if p.grad is not None}


def ddp_worker(rank: int, world: int, port: int, corpus: str, bert: str, out: str) -> None:
    import os

    import torch
    import torch.distributed as dist

    from ssrp.train.distributed import init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    per = 8 // world
    try:
        grads = {
            s: ddp_gradients(s, corpus, bert, info, range(rank * per, (rank + 1) * per)) for s in ("stage1", "stage2")
        }
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()
