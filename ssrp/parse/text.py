"""Text before parsing: cleaning, screening bad captions, and a deterministic rule-based tokenizer.

Screening runs before Stanza so a bad caption never enters (or slows down) a batch; each rejection is a
``RecordFailure`` with a stable reason code:

* ``empty_text``: nothing but whitespace;
* ``too_long``: more than ``max_chars`` characters or ``max_words`` whitespace-separated words;
* ``no_words``: no letter or digit (after dropping symbols), e.g. only emoji or punctuation;
* ``not_english``: fewer than ``min_latin_fraction`` of the letters are Latin script (Cyrillic, CJK, ...).
  Latin-script text in another language is not detected.
"""

from __future__ import annotations

import re
import unicodedata

from ssrp.deadletter import RecordFailure
from ssrp.parse.config import ParseConfig

# Unicode categories dropped by strip_symbols: other symbols (emoji, dingbats), control and format
# characters (zero-width joiners), private use, surrogates, unassigned and enclosing marks (keycaps).
_DROP_CATEGORIES = {"So", "Cc", "Cf", "Co", "Cs", "Cn", "Me"}
# emoji parts outside those categories: variation selectors (Mn) and skin-tone modifiers (Sk)
_DROP_RANGES = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF), (0x1F3FB, 0x1F3FF))


def _dropped(c: str) -> bool:
    if c.isspace():
        return False
    code = ord(c)
    return unicodedata.category(c) in _DROP_CATEGORIES or any(lo <= code <= hi for lo, hi in _DROP_RANGES)
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "jr.", "sr.", "no."}

# One token: an initialism (U.S.), a number with its internal separators (3.50, 1,000, 10-year-old),
# the stem before a negative clitic (do|n't), a clitic ('s 're 've 'll 'd 'm n't), a word with internal
# hyphens or apostrophes (ice-cream, o'clock), an ellipsis, or any other single non-space character.
_TOKEN = re.compile(
    r"""
      (?:[^\W\d_]\.){2,}
    | \d+(?:[.,:/]\d+)*(?:-\w+)*(?!\w)
    | \w+?(?=n['\u2019]t\b)
    | n['\u2019]t\b
    | ['\u2019](?:s|re|ve|ll|d|m)\b
    | \w+(?:-\w+|['\u2019](?!(?:s|re|ve|ll|d|m)\b)\w+)*
    | \.\.\.
    | [^\w\s]
    """,
    re.VERBOSE | re.IGNORECASE,
)


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")  # the only dropped characters in ASCII text


def normalize(text: str, strip_symbols: bool) -> str:
    """NFC, symbols dropped (if asked), whitespace collapsed."""
    if text.isascii():
        text = _ASCII_CONTROL.sub(" ", text) if strip_symbols else text
    else:
        text = unicodedata.normalize("NFC", text)
        if strip_symbols:
            text = "".join(" " if _dropped(c) else c for c in text)
    return " ".join(text.split())


def dropped_chars(text: str) -> int:
    """How many characters ``normalize(..., strip_symbols=True)`` drops (emoji, symbols, invisible ones)."""
    if text.isascii():
        return len(_ASCII_CONTROL.findall(text))
    return sum(1 for c in unicodedata.normalize("NFC", text) if _dropped(c))


def latin_fraction(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    latin = sum(1 for c in letters if unicodedata.name(c, "").startswith("LATIN"))
    return latin / len(letters)


def screen(text: str, cfg: ParseConfig) -> str:
    """The text to parse, or RecordFailure naming why this caption cannot be parsed."""
    if not isinstance(text, str) or not text.strip():
        raise RecordFailure("empty_text", "the caption is empty")
    if len(text) > cfg.max_chars:
        raise RecordFailure("too_long", f"{len(text)} characters, more than max_chars={cfg.max_chars}")
    clean = normalize(text, cfg.strip_symbols)
    n_words = len(clean.split())
    if n_words > cfg.max_words:
        raise RecordFailure("too_long", f"{n_words} words, more than max_words={cfg.max_words}")
    if not any(c.isalnum() for c in clean):
        raise RecordFailure("no_words", f"no letter or digit in {text[:80]!r}")
    frac = latin_fraction(clean)
    if frac < cfg.min_latin_fraction:
        raise RecordFailure(
            "not_english", f"only {frac:.0%} of the letters are Latin script (min_latin_fraction={cfg.min_latin_fraction})"
        )
    return clean


def pretokenize(text: str) -> list[str]:
    """Split a caption into UD-English-style tokens, deterministically (no model).

    Punctuation is split off, clitics are separate tokens (``doesn't`` -> ``does n't``, ``dog's`` ->
    ``dog 's``), numbers and hyphenated words stay whole, initialisms and a few abbreviations keep their
    period.
    """
    tokens: list[str] = []
    for chunk in text.split():
        pieces = _TOKEN.findall(chunk)
        if len(pieces) >= 2 and pieces[-1] == "." and (pieces[-2] + ".").lower() in _ABBREVIATIONS:
            pieces[-2:] = [pieces[-2] + "."]
        tokens.extend(pieces)
    return tokens
