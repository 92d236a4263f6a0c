import pytest

from ssrp.deadletter import RecordFailure
from ssrp.parse.config import ParseConfig
from ssrp.parse.text import dropped_chars, normalize, pretokenize, screen


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("A man rides a horse on the beach.", ["A", "man", "rides", "a", "horse", "on", "the", "beach", "."]),
        ("The kite doesn't fly.", ["The", "kite", "does", "n't", "fly", "."]),
        ("The dog's ball, I'm sure, isn't red!", ["The", "dog", "'s", "ball", ",", "I", "'m", "sure", ",", "is", "n't",
                                                  "red", "!"]),
        ("It’s a 10-year-old boy with 3.50 dollars and 1,000 kites.",
         ["It", "’s", "a", "10-year-old", "boy", "with", "3.50", "dollars", "and", "1,000", "kites", "."]),
        ("An ice-cream stand in the U.S. at 10:30 (Mr. Smith's).",
         ["An", "ice-cream", "stand", "in", "the", "U.S.", "at", "10:30", "(", "Mr.", "Smith", "'s", ")", "."]),
        ("Crème brûlée at a café... naïve Zoë", ["Crème", "brûlée", "at", "a", "café", "...", "naïve", "Zoë"]),
        ("o'clock 3D 1990s", ["o'clock", "3D", "1990s"]),
    ],
)
def test_pretokenize_splits_like_ud_english(text, tokens):
    assert pretokenize(text) == tokens


def test_pretokenize_keeps_every_non_space_character():
    text = "A café's crème-brûlée costs $3.50!! (yes) — \"really\" #1 50% e-mail"
    assert "".join(pretokenize(text)) == text.replace(" ", "")


def test_normalize_drops_emoji_and_invisible_characters():
    text = "A dog 🐶 on a\u200b beach\u00a0 \u2764\ufe0f"
    assert normalize(text, strip_symbols=True) == "A dog on a beach"
    assert dropped_chars(text) == 4  # dog face, zero-width space, heart, variation selector
    assert normalize(text, strip_symbols=False) == "A dog 🐶 on a\u200b beach \u2764\ufe0f"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty_text"),
        ("   \n\t", "empty_text"),
        (" ".join(["dog"] * 129), "too_long"),
        ("a" * 1001, "too_long"),
        ("😀🎉 !!!", "no_words"),
        ("... ?", "no_words"),
        ("Мужчина едет на лошади по пляжу", "not_english"),
        ("一个男人在海滩上骑马", "not_english"),
    ],
)
def test_screen_names_what_is_wrong(text, reason):
    with pytest.raises(RecordFailure) as err:
        screen(text, ParseConfig())
    assert err.value.reason == reason


@pytest.mark.parametrize("text", ["Un café crème près de la plage.", "A dog 🐶 runs.", "2 dogs", "A man (Иван) runs on the beach"])
def test_screen_passes_latin_text(text):
    assert screen(text, ParseConfig()) == normalize(text, strip_symbols=True)


def test_config_is_validated():
    for bad in ({"max_tokens": 2}, {"tokenizer": "spacy"}, {"multi_sentence": "merge"}, {"device": "tpu"},
                {"chunk_size": 0}, {"min_latin_fraction": 1.5}):
        with pytest.raises(ValueError):
            ParseConfig(**bad)
    cfg = ParseConfig(models_dir="m")
    assert cfg.resolved_parser_dir == "m/parse" and cfg.resolved_vocab_path == "m/bert/vocab.txt"
    assert cfg.max_pieces == 34


@pytest.mark.parametrize("text", ["A dog\x00 on a\x07 beach\x7f.\t\n", "A dög\x00 on a\x07 beach\x7f.\t\n"])
def test_ascii_fast_path_drops_what_the_general_path_drops(text):
    assert normalize(text, True) in ("A dog on a beach .", "A dög on a beach .")
    assert dropped_chars(text) == 3
