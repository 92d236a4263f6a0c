import random
import unicodedata
from collections import Counter

import pytest

from ssrp.parse.wordpiece import (
    SPECIAL_TOKENS,
    VocabError,
    _words,
    align,
    build_vocab,
    load_wordpiece,
    train_wordpiece,
    word_pieces,
)

CAPTIONS = [
    "A man rides a horse on the beach.",
    "Two dogs are sitting on a bench near the lake.",
    "A red bus parked on a street next to a building.",
    "The woman is holding an umbrella in the rain.",
    "A cat sleeping on a wooden table in a kitchen.",
    "Several birds flying over the blue water.",
] * 3


def naive_vocab(texts, vocab_size, min_frequency):
    """Reference: recount every pair after every merge; ties to the smallest pair."""
    counts = _words(texts, lowercase=True)
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
                   | {c for w in counts for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, symbols in words.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += counts[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        new = best[0] + best[1][2:]
        for w, symbols in words.items():
            out, k = [], 0
            while k < len(symbols):
                if k + 1 < len(symbols) and (symbols[k], symbols[k + 1]) == best:
                    out.append(new)
                    k += 2
                else:
                    out.append(symbols[k])
                    k += 1
            words[w] = out
        if new not in vocab:
            vocab.append(new)
    return vocab


def test_vocab_equals_the_naive_merge_loop():
    rng = random.Random(0)
    letters = "abcde"
    texts = [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(8)) for _ in range(40)]
    for min_frequency in (1, 2, 3):
        assert build_vocab(texts, 400, min_frequency=min_frequency) == naive_vocab(texts, 400, min_frequency)
    assert build_vocab(CAPTIONS, 300, min_frequency=2) == naive_vocab(CAPTIONS, 300, 2)


def test_training_is_deterministic_and_independent_of_text_order(tmp_path):
    shuffled = CAPTIONS[:]
    random.Random(1).shuffle(shuffled)
    a = open(train_wordpiece(CAPTIONS, str(tmp_path / "a"), vocab_size=250), "rb").read()
    b = open(train_wordpiece(shuffled, str(tmp_path / "b"), vocab_size=250), "rb").read()
    assert a == b
    lines = a.decode().splitlines()
    assert lines[:5] == list(SPECIAL_TOKENS) and len(lines) == len(set(lines)) <= 250
    assert "horse" in lines


def test_trained_vocab_is_read_alike_by_transformers(tmp_path):
    from transformers import BertTokenizerFast

    train_wordpiece(CAPTIONS, str(tmp_path), vocab_size=300)
    ours = load_wordpiece(str(tmp_path / "vocab.txt"))
    theirs = BertTokenizerFast.from_pretrained(str(tmp_path))
    words = ["A", "Café", "horse-riding", "3.50", "don't", "Zoë"]
    assert theirs(words, is_split_into_words=True)["input_ids"] == ours.encode(words, is_pretokenized=True).ids
    assert theirs.pad_token_id == 0 and theirs.cls_token_id == ours.token_to_id("[CLS]")


def test_load_wordpiece_needs_a_bert_vocab(tmp_path):
    with pytest.raises(VocabError, match="models fetch bert"):
        load_wordpiece(str(tmp_path / "missing.txt"))
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(VocabError, match="special tokens"):
        load_wordpiece(str(tmp_path / "vocab.txt"))


def bert_normal(word: str) -> str:
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


TRICKY = ["Crème-brûlée", "naïve", "Zoë", "10-year-old", "3.50", "1,000", "n't", "'s", "U.S.", "e-mail", "rock'n'roll",
          "ÉCOLE", "horses", "x\u0301", "cafe\u0301"]


def test_pieces_spell_each_word_after_bert_normalisation(vocab_path):
    tokenizer = load_wordpiece(vocab_path)
    [pieces] = word_pieces(tokenizer, [TRICKY])
    assert len(pieces) == len(TRICKY)
    for word, ids in zip(TRICKY, pieces, strict=True):
        tokens = [tokenizer.id_to_token(i) for i in ids]
        assert "[UNK]" not in tokens
        assert "".join(t.removeprefix("##") for t in tokens) == bert_normal(word)


def test_a_word_with_no_piece_becomes_unk(vocab_path):
    tokenizer = load_wordpiece(vocab_path)
    [pieces] = word_pieces(tokenizer, [["a", "\u200b", "dog"]])
    assert pieces[1] == [tokenizer.token_to_id("[UNK]")] and len(pieces) == 3


@pytest.mark.parametrize("seed", range(20))
def test_align_keeps_the_longest_prefix_of_whole_words(seed):
    rng = random.Random(seed)
    pieces = [[rng.randrange(5, 100) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 15))]
    max_pieces = rng.randint(1, 34)
    a = align(pieces, max_pieces, cls_id=2, sep_id=3)
    sizes = [len(p) for p in pieces]
    expect = max((k for k in range(len(pieces) + 1) if sum(sizes[:k]) <= max_pieces), default=0)
    assert a.kept == expect
    assert a.input_ids.tolist() == [2] + [i for p in pieces[:expect] for i in p] + [3]
    assert a.piece_word.tolist() == [-1] + [w for w in range(expect) for _ in pieces[w]] + [-1]
    assert len(a.input_ids) <= max_pieces + 2


def test_a_word_over_100_characters_is_one_unk_as_in_bert(vocab_path):
    tokenizer = load_wordpiece(vocab_path)
    [pieces] = word_pieces(tokenizer, [["dog", "x" * 101, "x" * 40]])
    assert pieces[1] == [tokenizer.token_to_id("[UNK]")] and len(pieces[2]) > 1
