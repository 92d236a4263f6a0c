"""The model card (README.md) of a release: data, settings, corpus identity and metrics, with the gaps marked.

Everything the release knows is filled in from its config block (ssrp.eval.release): the training corpus's
identity (config hash, split, counts, the digests of the models that built it), both stages' settings and the
metrics of ``ssrp eval probe --json`` / ``ssrp retrieve`` outputs given with ``--metrics``. What only its
author knows (purpose, hardware, limitations found) is left as ``TODO`` lines to fill in.
"""

from __future__ import annotations

import json
import os

from ssrp.config import to_dict
from ssrp.train.config import TrainConfig

CITATION = """@inproceedings{gu2020ssrp,
  title     = {Self-Supervised Relationship Probing},
  author    = {Gu, Jiuxiang and Kuen, Jason and Joty, Shafiq and Cai, Jianfei and Morariu, Vlad and
               Zhao, Handong and Sun, Tong},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2020}
}"""


def read_metrics(path: str) -> dict:
    """A metrics file: the JSON of ``ssrp eval probe --json`` or the retrieval.json of ``ssrp retrieve``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"--metrics {path}: no such file") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--metrics {path}: not a JSON file ({err})") from None
    if isinstance(data, dict) and "variants" in data:
        return {"kind": "probe", "path": path, "data": data}
    if isinstance(data, dict) and "recall" in data:
        return {"kind": "retrieval", "path": path, "data": data}
    raise ValueError(f"--metrics {path}: neither `ssrp eval probe --json` output nor a retrieval.json")


def model_card(block: dict, stage1_cfg: TrainConfig | None, metrics: list[dict]) -> str:
    """The README.md of a release."""
    sections = [_front_matter(block), _title(block), _usage(block), _data(block.get("corpus")),
                _settings(block, stage1_cfg), _metrics(metrics), _files(block), _todo(), "## Citation\n\n"
                f"```bibtex\n{CITATION}\n```\n"]
    return "\n".join(sections)


def _front_matter(block: dict) -> str:
    lxmert = block["layout"] == "lxmert"
    tags = ["ssrp", "vision-language", "relationship-probing", *(["lxmert"] if lxmert else [])]
    lines = ["---", f"library_name: {'transformers' if lxmert else 'ssrp'}", "tags:", *(f"- {t}" for t in tags),
             "datasets:", "- coco", "---", ""]
    return "\n".join(lines)


def _title(block: dict) -> str:
    src = block["source"]
    corpus = block.get("corpus") or {}
    split = f", COCO {corpus['split']}" if corpus.get("split") else ""
    return (f"# SSRP-{block['variant'].capitalize()}{split} ({src.get('stage')}, step {src.get('step')})\n\n"
            "Self-Supervised Relationship Probing (Gu et al., NeurIPS 2020), trained with "
            f"ssrp {block['ssrp_version']}.\n\nTODO: who trained this model, why, on what "
            "hardware and for how long.\n")


def _usage(block: dict) -> str:
    m = block["model"]
    inputs = block["inputs"]
    lines = ["## How to load", ""]
    if block["layout"] == "lxmert":
        lines += ["SSRP-Cross has LXMERT's architecture; `transformers` loads it as it is:", "", "```python",
                  "from transformers import LxmertModel", "", 'model = LxmertModel.from_pretrained("THIS_DIR")',
                  "out = model(input_ids=ids, attention_mask=text_mask, visual_feats=features, visual_pos=boxes,",
                  "            visual_attention_mask=object_mask)",
                  "W, V = out.language_output, out.vision_output  # token and object states",
                  "```", "",
                  "`pooled_output` is g_align(w_CLS) of the stage-1 matching head (Eq. 4) when the release has "
                  "it (`align` in heads.safetensors); otherwise transformers initialises the pooler at random.", ""]
    lines += ["With ssrp, the encoder and the relationship probes:", "", "```python", "import ssrp", "",
              'release = ssrp.load("THIS_DIR")', "W, V = release(ids, text_mask, features, boxes, object_mask)",
              "rel = release.relations(W, V, piece_word, object_mask)  # R_w, R_v: small = close",
              "```", "", "Inputs (as in training):", "",
              f"- text: BERT WordPiece ids `[CLS] ... [SEP]`, at most {inputs['max_tokens']} "
              f"(padding id {inputs['pad_id']}; vocabulary sha256 {_short(inputs.get('vocab_sha256'))});",
              f"- objects: at most {inputs['max_objects']} BUTD region features of {m['feature_dim']} floats, sorted "
              "by detector confidence, with boxes normalised as `x1/W, y1/H, x2/W, y2/H` (`ssrp features`);",
              "- masks: 1 (True) for real tokens / objects.", ""]
    return "\n".join(lines)


def _short(digest: str | None) -> str:
    return f"`{digest[:16]}`" if digest else "not recorded (export with --vocab)"


def _data(corpus: dict | None) -> str:
    lines = ["## Data", ""]
    if not corpus:
        return "\n".join(lines + ["TODO: the training corpus was not given (`ssrp export hf --corpus CORPUS`): "
                                  "name it, its COCO split and its config hash.", ""])
    views = ", ".join(sorted(corpus.get("image_views") or {})) or "-"
    variants = ", ".join(sorted(corpus.get("text_variants") or {})) or "-"
    lines += ["| corpus | config hash | COCO split | images | image views | caption variants |",
              "|---|---|---|---|---|---|",
              f"| `{os.path.basename(str(corpus.get('path') or ''))}` | `{corpus.get('config_hash')}` | "
              f"{corpus.get('split') or '-'} | {corpus.get('images')} | {views} | {variants} |", ""]
    models = sorted((corpus.get("models") or {}).items())
    if not models:
        return "\n".join(lines + ["The corpus manifest records no models.", ""])
    lines += ["Models that built the corpus:", "", "| stage | identity |", "|---|---|"]
    lines += [f"| {name} | {_identity(ident)} |" for name, ident in models]
    return "\n".join(lines + [""])


def _identity(ident) -> str:
    if not isinstance(ident, dict):
        return f"`{ident}`"
    parts = []
    for k, v in sorted(ident.items()):
        if isinstance(v, str) and len(v) == 64:
            v = v[:16]
        parts.append(f"{k}: `{json.dumps(v, sort_keys=True) if isinstance(v, dict) else v}`")
    return "; ".join(parts)


def _settings(block: dict, stage1_cfg: TrainConfig | None) -> str:
    m, t = block["model"], block["training"]
    stage1 = t if t["stage"] == "stage1" else (_training(stage1_cfg) if stage1_cfg else None)
    stage2 = t if t["stage"] == "stage2" else None
    rows = [("peak learning rate", "lr"), ("global batch", "batch_size"), ("epochs", "epochs"),
            ("max steps (0 = epochs)", "max_steps"), ("warm-up fraction", "warmup_fraction"),
            ("weight decay", "weight_decay")]
    lines = ["## Training settings", "",
             f"Encoder: {m['text_layers']} text, {m['visual_layers']} visual and {m['inter_layers']} inter-modality "
             f"layers (SSRP-{m['variant'].capitalize()}), hidden {m['hidden']}, {m['heads']} heads, FF {m['intermediate']}.", "",
             "| setting | stage 1 | stage 2 |", "|---|---|---|"]
    for label, key in rows:
        lines.append(f"| {label} | {_cell(stage1, key)} | {_cell(stage2, key)} |")
    for label, key in (("seed", "seed"), ("precision", "precision")):
        lines.append(f"| {label} | {_top(stage1, key)} | {_top(stage2, key)} |")
    if stage2 and block.get("stage2"):
        s2 = block["stage2"]
        lines += ["", f"Probes: rank {s2['probe_rank']}, temperature {s2['temperature']}, relation matrices padded "
                      f"to {s2['max_nodes']} nodes, projections {s2['proj_hidden']} -> {s2['proj_dim']}."]
    if stage1 is None:
        lines += ["", "Stage 1: unknown (export with `--stage1 RUN1/checkpoint.pt` to record it)."]
    return "\n".join(lines + [""])


def _training(cfg: TrainConfig) -> dict:
    return {"stage": cfg.stage, "optim": to_dict(cfg.optim), "seed": cfg.seed, "precision": cfg.precision}


def _cell(training: dict | None, key: str) -> str:
    return "-" if training is None else str(training["optim"].get(key))


def _top(training: dict | None, key: str) -> str:
    return "-" if training is None else str(training.get(key))


def _metrics(metrics: list[dict]) -> str:
    lines = ["## Metrics", ""]
    probe = [m for m in metrics if m["kind"] == "probe"]
    retrieval = [m for m in metrics if m["kind"] == "retrieval"]
    if not probe:
        lines += ["| caption variant | UUAS | Spearman |", "|---|---|---|",
                  "| raw | TODO | TODO |", "",
                  "Not evaluated yet: run `ssrp eval probe --ckpt ... --corpus HELD_OUT --json probe.json` and "
                  "export again with `--metrics probe.json`.", ""]
    for m in probe:
        d = m["data"]
        lo, hi = d.get("spearman_lengths", ["?", "?"])
        lines += [f"Probes on {d.get('images')} images of `{os.path.basename(str(d.get('corpus', '')))}` "
                  f"(`ssrp eval probe`):", "",
                  f"| caption variant | sentences | UUAS | Spearman ({lo}-{hi}) |", "|---|---|---|---|"]
        for name, v in d["variants"].items():
            lines.append(f"| {name} | {v.get('sentences')} | {_num(v.get('uuas'))} | {_num(v.get('spearman'))} |")
        lines += _stability(d.get("stability", {}))
    for m in retrieval:
        d = m["data"]
        ks = sorted({k.split("@")[1] for t in d["recall"].values() for k in t if "@" in k}, key=int)
        lines += [f"Image-to-image retrieval on {d.get('images')} images (`ssrp retrieve`; {d.get('relevance')}):", "",
                  "| method | " + " | ".join(f"R@{k} | P@{k}" for k in ks) + " |",
                  "|---|" + "---|---|" * len(ks)]
        for name, t in d["recall"].items():
            lines.append(f"| {name} | " + " | ".join(f"{_num(t.get(f'R@{k}'))} | {_num(t.get(f'P@{k}'))}" for k in ks)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def _stability(stability: dict) -> list[str]:
    rows = [(name, rep, s[rep]) for name, s in stability.items() for rep in ("matrix", "projection") if rep in s]
    if not rows:
        return [""]
    lines = ["", "Stability (mean cosine between views of an image / variants of a caption, against unrelated ones):",
             "", "| relation | compared | same | unrelated | gap |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {rep} | {_num(m.get('same'))} | {_num(m.get('unrelated'))} | {_num(m.get('gap'))} |"
              for name, rep, m in rows]
    return lines + [""]


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _files(block: dict) -> str:
    weights = "LxmertModel's tensor names" if block["layout"] == "lxmert" else "SSRPEncoder's tensor names"
    heads = ", ".join(block["heads"]) or "none"
    return ("## Files\n\n"
            f"- `config.json`: the model config; its `ssrp` block holds every ssrp setting and this card's data.\n"
            f"- `model.safetensors`: the encoder ({weights}, float32).\n"
            f"- `heads.safetensors`: {heads} (`probes.*`: the stage-2 probes and projection heads; `align.*`: "
            "the stage-1 g_align and matching classifier).\n"
            "- `vocab.txt`: the WordPiece vocabulary, when exported with `--vocab`.\n")


def _todo() -> str:
    return ("## Limitations\n\nTODO: what this model was not evaluated on, known failure cases, and the licences of "
            "COCO (CC BY 4.0 annotations; images under their Flickr terms) and of the models that built the corpus.\n")
