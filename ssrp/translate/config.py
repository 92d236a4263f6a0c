"""Settings of the translate stage (back-translation through German and Russian); docs/translate.md
argues for each default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

STAGE = "translate"
PIVOTS = ("de", "ru")


@dataclass(frozen=True)
class TranslateConfig:
    """Settings of the back-translation stage; the defaults are the ones docs/translate.md argues for."""
    # settings of where and how fast, not of what: left out of a corpus's config (ssrp.config.config_identity)
    RUNTIME: ClassVar[frozenset[str]] = frozenset(
        {"models_dir", "device", "max_tokens", "max_sentences", "trusted_sha256", "sort_by_length"}
    )

    models_dir: str = ""  # the models directory holding translate/{en-de,de-en,en-ru,ru-en}
    pivots: tuple[str, ...] = PIVOTS  # paper: German and Russian
    # forward leg, English -> pivot: restricted sampling (Edunov et al. 2018, top-k 10)
    forward_sampling: bool = True
    forward_topk: int = 10  # 0: no top-k restriction
    forward_topp: float = 0.0  # nucleus sampling instead of top-k when > 0
    forward_beam: int = 1  # samples drawn (sampling) or beam width (beam search); the best is kept
    forward_temperature: float = 1.0
    # return leg, pivot -> English: beam search
    back_sampling: bool = False
    back_topk: int = 10
    back_topp: float = 0.0
    back_beam: int = 5  # fairseq's translate() default
    back_temperature: float = 1.0
    lenpen: float = 1.0  # beam-search length penalty (fairseq --lenpen)
    max_len_a: float = 1.5  # output length limit: max_len_a * source tokens + max_len_b (fairseq -a/-b)
    max_len_b: int = 10
    # batching: length-sorted batches of at most max_tokens padded source tokens
    max_tokens: int = 8000
    max_sentences: int = 512
    sort_by_length: bool = True  # False: batches in input order (only for benchmarks)
    # input limits and the output filter
    max_source_tokens: int = 128  # BPE tokens (COCO's longest captions have ~60); longer -> caption_too_long
    length_ratio: float = 1.5  # drop a paraphrase whose word count differs from the caption's by more (Edunov)
    drop_unk: bool = True  # drop a pivot or paraphrase containing <unk>
    drop_identical: bool = False  # drop a paraphrase equal to the caption (paper keeps 3 sentences per caption)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    fp16: bool = True  # half precision on CUDA (ignored on CPU)
    trusted_sha256: tuple[str, ...] = ()  # extra model.pt digests allowed to be fully unpickled (ssrp.translate.trust)

    def __post_init__(self) -> None:
        bad = [p for p in self.pivots if p not in PIVOTS]
        if bad or not self.pivots or len(set(self.pivots)) != len(self.pivots):
            raise ValueError(f"pivots={self.pivots!r}: use distinct languages from {PIVOTS}")
        for name in ("forward_beam", "back_beam", "max_tokens", "max_sentences", "max_source_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
        for name in ("forward_topk", "back_topk", "max_len_b"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0 (0 disables)")
        for name in ("forward_topp", "back_topp"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in [0, 1) (0 disables)")
        for name in ("forward_temperature", "back_temperature", "lenpen", "max_len_a"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if not self.length_ratio >= 1.0:
            raise ValueError(f"length_ratio={self.length_ratio!r} must be >= 1 (use inf to disable the filter)")
        if self.max_tokens < self.max_source_tokens:
            raise ValueError(f"max_tokens={self.max_tokens} must be >= max_source_tokens={self.max_source_tokens}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device={self.device!r}: use auto, cpu, cuda or cuda:N")
        bad_digests = [
            d for d in self.trusted_sha256 if len(d) != 64 or any(c not in "0123456789abcdefABCDEF" for c in d)
        ]
        if bad_digests:
            raise ValueError(f"trusted_sha256 entries must be 64 hex digits; got {bad_digests!r}")
