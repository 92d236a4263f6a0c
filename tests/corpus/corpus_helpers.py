import numpy as np

from ssrp.corpus import ImageRecord, IndexRecord, TextRecord, encode

PLAN = {"image": 3, "text": 2, "index": 1}


def make_image(image_id: int, view: str = "raw", n: int = 36, seed: int = 0) -> ImageRecord:
    rng = np.random.default_rng(seed * 100_003 + image_id)
    xy = rng.uniform(0, 300, (n, 2)).astype(np.float32)
    return ImageRecord(
        image_id=image_id,
        view=view,
        height=480,
        width=640,
        boxes=np.concatenate([xy, xy + rng.uniform(5, 100, (n, 2)).astype(np.float32)], 1),
        features=rng.standard_normal((n, 2048)).astype(np.float16),
        obj_ids=rng.integers(1, 1601, n).astype(np.int32),
        obj_conf=rng.uniform(0.2, 1, n).astype(np.float32),
        attr_ids=rng.integers(1, 401, n).astype(np.int32),
        attr_conf=rng.uniform(0, 1, n).astype(np.float32),
        view_params={"angle": 90} if view == "rot90" else {},
        file_name=f"{image_id:012d}.jpg",
    )


def make_text(caption_id: int, image_id: int, variant: str = "raw") -> TextRecord:
    words = ("a", "dog", "runs", ".")
    heads = np.array([2, 3, 0, 3], np.int32)
    dist = np.array([[0, 1, 2, 2], [1, 0, 1, 1], [2, 1, 0, 1], [2, 1, 1, 0]], np.uint8)
    return TextRecord(
        caption_id=caption_id,
        image_id=image_id,
        variant=variant,
        text="a dog runs.",
        words=words,
        upos=("DET", "NOUN", "VERB", "PUNCT"),
        deprels=("det", "nsubj", "root", "punct"),
        heads=heads,
        input_ids=np.array([2, 10, 11, 12, 13, 3], np.int32),
        piece_word=np.array([-1, 0, 1, 2, 3, -1], np.int32),
        tree_dist=dist,
    )


def sample_records(n_images: int = 12, views=("raw", "rot90")):
    out = []
    for i in range(1, n_images + 1):
        for view in views:
            r = make_image(i, view)
            out.append((r.key, encode(r)))
        caps = [i * 10 + k for k in range(2)]
        for c in caps:
            for variant in ("raw", "de"):
                t = make_text(c, i, variant)
                out.append((t.key, encode(t)))
        ix = IndexRecord(image_id=i, caption_ids=np.array(caps, np.int64), file_name=f"{i:012d}.jpg", height=480, width=640)
        out.append((ix.key, encode(ix)))
    return out
