"""BackTranslator on the tiny models: shape and order, references, sampling, seeding, filters, bad input."""

import pickle
import random

import pytest

pytest.importorskip("fairseq", reason="fairseq-fixed is not installed (make install)")

from ssrp.deadletter import DeadLetter, is_dead  # noqa: E402
from ssrp.translate import decode as translation_decode  # noqa: E402
from ssrp.translate.stage import (  # noqa: E402
    TranslateConfig,
    count_outcomes,
    seed_for,
    word_ratio,
)

pytestmark = pytest.mark.usefixtures("bt_one_thread")


def _view(output):
    """What a caption's result says, comparable across runs."""
    if is_dead(output):
        return ("dead", output.key, output.reason)
    return [(r.caption_id, r.image_id, r.variant, r.text, r.pivot, r.meta.get("dropped")) for r in output]


def _pivots(output, variant):
    return {r.variant: r for r in output}.get(variant)


# ------------------------------------------------------------------------------------------------
# Shape and order.


def test_one_result_per_caption_in_input_order(bt_reference, bt_items):
    assert len(bt_reference) == len(bt_items)
    for (caption_id, image_id, text), out in zip(bt_items, bt_reference, strict=True):
        assert not is_dead(out)
        raw = out[0]
        assert (raw.caption_id, raw.image_id, raw.variant, raw.text, raw.pivot) == (
            caption_id,
            image_id,
            "raw",
            text,
            "",
        )
        assert [r.variant for r in out] == ["raw"] + [v for v in ("de", "ru") if _pivots(out, v)]
        for r in out:
            assert r.caption_id == caption_id and r.image_id == image_id
            assert r.words == () and r.heads.size == 0 and r.input_ids.size == 0  # the parse stage fills these
        for r in out[1:]:
            assert r.text and r.pivot and r.meta["pivot_lang"] == r.variant
            assert r.meta["settings"]["forward"]["search"] == "sampling" and r.meta["settings"]["back"]["beam"] == 5
            assert r.meta["settings"]["models"][f"en-{r.variant}"]
        dropped = {d["variant"] for d in raw.meta.get("dropped", [])}
        assert dropped | {r.variant for r in out[1:]} == {"de", "ru"}  # every pivot is accounted for


def test_results_do_not_depend_on_batching_or_order(bt_translator, bt_items, bt_reference):
    tiny_batches = bt_translator.derive(max_sentences=2)
    assert [_view(o) for o in tiny_batches(bt_items)] == [_view(o) for o in bt_reference]
    order = list(range(len(bt_items)))
    random.Random(3).shuffle(order)
    unsorted = bt_translator.derive(sort_by_length=False, max_sentences=3, max_tokens=10**6)
    shuffled = unsorted([bt_items[i] for i in order])
    assert [_view(shuffled[order.index(i)]) for i in range(len(bt_items))] == [_view(o) for o in bt_reference]
    alone = [bt_translator([item])[0] for item in bt_items[2:4]]
    assert [_view(o) for o in alone] == [_view(o) for o in bt_reference[2:4]]


def test_a_caption_outputs_stay_within_its_own_length_limit(bt_translator, bt_items):
    hub = bt_translator._hubs["en-de"]
    gen = bt_translator._generators["en-de"]
    tokens = [hub.encode(t) for _, _, t in bt_items]
    outs = translation_decode.generate(hub, gen, tokens, list(range(len(tokens))), max_tokens=10**6, max_sentences=99)
    for src, out in zip(tokens, outs, strict=True):
        limit = translation_decode.row_limit(src.numel(), gen.max_len_a, gen.max_len_b, gen.max_len)
        assert out.numel() - 1 <= limit  # minus </s>


def test_plan_batches_respects_budget_and_covers_everything():
    lengths = [random.Random(i).randint(1, 40) for i in range(200)]
    batches = translation_decode.plan_batches(lengths, max_tokens=120, max_sentences=16)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 120
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)
    assert translation_decode.plan_batches([5, 500, 5], 100, 8) == [[0, 2], [1]]  # an oversized row goes alone


# ------------------------------------------------------------------------------------------------
# References: fairseq's own hub decoding.


def test_return_leg_equals_fairseq_hub_beam_search(bt_translator, bt_reference):
    cfg = bt_translator.cfg
    for out in bt_reference[:5]:
        for r in out[1:]:
            hub = bt_translator._hubs[f"{r.variant}-en"]
            expected = hub.translate(r.pivot, beam=cfg.back_beam, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b)
            assert r.text == expected


def test_top1_sampling_is_greedy_decoding(bt_translator, bt_items):
    greedy = bt_translator.derive(forward_topk=1)
    nucleus = bt_translator.derive(forward_topk=0, forward_topp=1e-6)  # the nucleus is the top token alone
    hub = bt_translator._hubs["en-de"]
    cfg = bt_translator.cfg
    for out_k, out_p, (_, _, text) in zip(greedy(bt_items[:4]), nucleus(bt_items[:4]), bt_items[:4], strict=True):
        expected = hub.translate(text, beam=1, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b)
        assert _pivot_text(out_k, "de") == expected == _pivot_text(out_p, "de")


def _pivot_text(out, variant):
    rec = _pivots(out, variant)
    if rec is not None:
        return rec.pivot
    return next(d["pivot"] for d in out[0].meta["dropped"] if d["variant"] == variant)


# ------------------------------------------------------------------------------------------------
# Sampling settings and seeds.


def test_sampled_tokens_come_from_the_top_k(bt_translator, bt_items):
    """Teacher-force each sampled pivot through the model: every token is among the k most probable."""
    import torch

    k = 3
    hub = bt_translator._hubs["en-ru"]
    leg = translation_decode.LegSettings(True, k, 0.0, 1, 1.0, 1.0, 1.5, 10)
    gen = translation_decode.build_generator(hub, leg)
    model = hub.models[0]
    for i, (_, _, text) in enumerate(bt_items[:6]):
        src = hub.encode(text)
        out = translation_decode.generate(hub, gen, [src], [seed_for(0, i, "en-ru")], max_tokens=999, max_sentences=1)[
            0
        ]
        prev = torch.cat([torch.tensor([hub.tgt_dict.eos()]), out[:-1]]).unsqueeze(0)
        with torch.no_grad():
            logits, _ = model(src.unsqueeze(0), torch.tensor([src.numel()]), prev)
        lprobs = model.get_normalized_probs((logits, None), log_probs=True)[0]
        lprobs[:, hub.tgt_dict.pad()] = -float("inf")
        lprobs[0, hub.tgt_dict.eos()] = -float("inf")  # min_len = 1
        ranks = (lprobs > lprobs.gather(1, out.unsqueeze(1))).sum(dim=1)
        forced_eos = out.numel() - 1 == translation_decode.row_limit(src.numel(), 1.5, 10, gen.max_len)
        checked = ranks[:-1] if forced_eos else ranks
        assert int(checked.max()) < k


def test_same_seed_same_output_other_seed_other_samples(bt_translator, bt_items, bt_reference):
    again = bt_translator.derive()  # a second instance with the same settings
    assert [_view(o) for o in again(bt_items[:5])] == [_view(o) for o in bt_reference[:5]]
    other = bt_translator.derive(seed=1, back_beam=1)(bt_items)
    pivots = [_pivot_text(o, "de") for o in bt_reference]
    assert sum(a != _pivot_text(b, "de") for a, b in zip(pivots, other, strict=True)) >= len(bt_items) // 2


def test_beam_forward_leg_ignores_the_seed(bt_translator, bt_items):
    a = bt_translator.derive(forward_sampling=False, forward_beam=2, back_beam=1)(bt_items[:3])
    b = bt_translator.derive(forward_sampling=False, forward_beam=2, back_beam=1, seed=7)(bt_items[:3])
    assert [_view(o) for o in a] == [_view(o) for o in b]


def test_seed_for_is_stable_and_distinct():
    assert seed_for(0, 5, "en-de") == seed_for(0, 5, "en-de")
    values = {seed_for(s, c, leg) for s in range(3) for c in range(50) for leg in ("en-de", "en-ru")}
    assert len(values) == 300 and all(0 <= v < 2**62 for v in values)


def test_gumbel_max_draws_follow_the_softmax():
    import torch

    logp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    n = 20000
    noise = translation_decode.gumbel_noise(torch.arange(n), step=3, shape=(n, 1, 4))
    freq = torch.bincount((logp + noise).argmax(-1).view(-1), minlength=4).float() / n
    assert torch.allclose(freq, logp.exp(), atol=0.015)
    # a row's noise depends only on its seed, not on the other rows
    alone = translation_decode.gumbel_noise(torch.tensor([1234]), step=3, shape=(1, 1, 4))
    assert torch.equal(alone[0], noise[1234])


# ------------------------------------------------------------------------------------------------
# Filters and drops.


def test_length_filter_drops_exactly_the_out_of_ratio_paraphrases(bt_translator, bt_items, bt_reference):
    ratio = 1.5
    filtered = bt_translator.derive(length_ratio=ratio)(bt_items)
    kept = dropped = 0
    for ref, out, (_, _, text) in zip(bt_reference, filtered, bt_items, strict=True):
        for r in ref[1:]:
            if word_ratio(r.text, text) <= ratio:
                assert _pivots(out, r.variant).text == r.text
                kept += 1
            else:
                assert _pivots(out, r.variant) is None
                entry = next(d for d in out[0].meta["dropped"] if d["variant"] == r.variant)
                assert entry["reason"] == "length_ratio" and entry["text"] == r.text and entry["pivot"] == r.pivot
                assert entry["length_ratio"] == pytest.approx(word_ratio(r.text, text), abs=1e-3)
                dropped += 1
    assert dropped > 0  # the tiny models overrun, so the filter has work to do


def test_unknown_tokens_are_dropped_not_kept(bt_translator, bt_items, bt_reference):
    assert bt_translator.cfg.drop_unk
    keep = bt_translator.derive(drop_unk=False)(bt_items)
    for a, b in zip(keep, bt_reference, strict=True):
        for r in a[1:]:
            if "<unk>" in r.text or "<unk>" in r.pivot:
                assert _pivots(b, r.variant) is None
                assert any(d["reason"] == "unknown_token" for d in b[0].meta["dropped"] if d["variant"] == r.variant)
            else:
                assert _pivots(b, r.variant).text == r.text


def test_an_empty_paraphrase_is_recorded_as_dropped(bt_translator, bt_items, monkeypatch):
    translator = bt_translator.derive()
    hub = translator._hubs["ru-en"]
    real = translation_decode.decode_text
    monkeypatch.setattr(translation_decode, "decode_text", lambda h, t: "   " if h is hub else real(h, t))
    out = translator(bt_items[:3])
    for o in out:
        assert _pivots(o, "ru") is None
        assert [d["reason"] for d in o[0].meta["dropped"] if d["variant"] == "ru"] in (
            ["empty_paraphrase"],
            ["unknown_token"],
        )
    assert count_outcomes(out)["dropped"].get("ru/empty_paraphrase", 0) >= 1


def test_identical_paraphrases_can_be_dropped(bt_translator, bt_items, monkeypatch):
    translator = bt_translator.derive(drop_identical=True)
    hub, real = translator._hubs["de-en"], translation_decode.decode_text
    monkeypatch.setattr(translation_decode, "decode_text", lambda h, t: "A cat." if h is hub else real(h, t))
    out = translator([(1, 1, "A cat."), (2, 1, "A dog.")])
    de_drops = [[d["reason"] for d in o[0].meta.get("dropped", []) if d["variant"] == "de"] for o in out]
    assert _pivots(out[0], "de") is None and de_drops[0] in (["identical"], ["unknown_token"])
    assert (_pivots(out[1], "de") is not None and de_drops[1] == []) or de_drops[1] == ["unknown_token"]


def test_count_outcomes_tallies(bt_reference):
    counts = count_outcomes(list(bt_reference) + [DeadLetter("text/000000000001/raw", "translate", "empty_caption")])
    assert counts["captions"] == len(bt_reference) + 1
    assert counts["dead"] == {"empty_caption": 1}
    assert counts["records"]["raw"] == len(bt_reference)
    assert sum(counts["records"].values()) - counts["records"]["raw"] + sum(counts["dropped"].values()) == 2 * len(
        bt_reference
    )


# ------------------------------------------------------------------------------------------------
# Bad input and model failures.

BAD = [
    ((1, 1, ""), "empty_caption"),
    ((2, 1, " \t\n "), "empty_caption"),
    ((3, 1, "a dog " * 500), "caption_too_long"),  # far beyond a caption, cut by characters
    ((4, 1, "a dog on the beach " * 40), "caption_too_long"),  # hundreds of BPE tokens
    ((5, 1, "a dog\x00 on the beach"), "control_characters"),
    ((6, 1, "a dog\x1b[31m red"), "control_characters"),
    ((7, 1, b"a dog \xff\xfe on the beach"), "invalid_utf8"),
    ((8, 1, "a dog \ud800 here"), "invalid_unicode"),
    ((9, 1, 42), "not_text"),
    ((10, 1), "malformed_item"),
    (("x", 1, "A dog."), "malformed_item"),
]


def test_every_bad_input_gets_a_named_dead_letter_and_the_rest_is_translated(bt_translator, bt_items, bt_reference):
    mixed, where = [], {}
    for i, item in enumerate(bt_items):
        mixed.append(item)
        if i < len(BAD):
            where[len(mixed)] = BAD[i][1]
            mixed.append(BAD[i][0])
    for item, reason in BAD[len(bt_items) :]:
        where[len(mixed)] = reason
        mixed.append(item)
    out = bt_translator(mixed)
    assert len(out) == len(mixed)
    good = [o for i, o in enumerate(out) if i not in where]
    assert [_view(o) for o in good] == [_view(o) for o in bt_reference]
    for i, reason in where.items():
        assert isinstance(out[i], DeadLetter) and out[i].reason == reason and out[i].stage == "translate"
    assert out[where_index(where, "invalid_utf8")].key == "text/000000000007/raw"


def where_index(where, reason):
    return next(i for i, r in where.items() if r == reason)


def test_bytes_and_untrimmed_text_are_accepted(bt_translator):
    out = bt_translator([(1, 2, b"  A dog on the beach.\n"), (2, 2, "A\tdog\non the beach.")])
    assert out[0][0].text == "A dog on the beach."
    assert out[1][0].text == "A\tdog\non the beach."  # raw keeps the caption as given (stripped)


def test_a_sentence_the_model_fails_on_is_isolated(bt_translator, bt_items, bt_reference, monkeypatch):
    poisoned = bt_items[3][0]
    poison_seed = seed_for(bt_translator.cfg.seed, poisoned, "en-ru")
    real = translation_decode._run_batch
    calls = []

    def flaky(hub, generator, tokens, seeds):
        calls.append(len(tokens))
        if poison_seed in seeds:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(hub, generator, tokens, seeds)

    monkeypatch.setattr(translation_decode, "_run_batch", flaky)
    out = bt_translator(bt_items[:6])
    assert out[3].reason == "translation_failed" and "en-ru" in out[3].detail
    assert [_view(o) for i, o in enumerate(out) if i != 3] == [
        _view(o) for i, o in enumerate(bt_reference[:6]) if i != 3
    ]
    assert 1 in calls  # bisected down to the sentence alone


def test_batches_that_fail_as_a_whole_are_split_until_they_pass(bt_translator, bt_items, bt_reference, monkeypatch):
    real = translation_decode._run_batch

    def out_of_memory_above_three(hub, generator, tokens, seeds):
        if len(tokens) > 3:
            raise RuntimeError("CUDA out of memory")
        return real(hub, generator, tokens, seeds)

    monkeypatch.setattr(translation_decode, "_run_batch", out_of_memory_above_three)
    assert [_view(o) for o in bt_translator(bt_items[:7])] == [_view(o) for o in bt_reference[:7]]


# ------------------------------------------------------------------------------------------------
# Stage contract and settings.


def test_stage_pickles_as_config_only(bt_translator):
    clone = pickle.loads(pickle.dumps(bt_translator))
    assert clone.cfg == bt_translator.cfg
    with pytest.raises(RuntimeError, match="load"):
        clone([(1, 1, "A dog.")])


def test_single_pivot_and_derive_limits(bt_translator, bt_items):
    only_ru = bt_translator.derive(pivots=("ru",))(bt_items[:2])
    assert all({r.variant for r in o} <= {"raw", "ru"} for o in only_ru)
    with pytest.raises(ValueError, match="cannot change"):
        bt_translator.derive(device="cuda")


@pytest.mark.parametrize(
    "changes, word",
    [
        ({"pivots": ("fr",)}, "pivots"),
        ({"pivots": ()}, "pivots"),
        ({"forward_topk": -1}, "forward_topk"),
        ({"forward_topp": 1.0}, "forward_topp"),
        ({"back_beam": 0}, "back_beam"),
        ({"length_ratio": 0.9}, "length_ratio"),
        ({"max_tokens": 10}, "max_tokens"),
        ({"device": "tpu"}, "device"),
        ({"trusted_sha256": ("abc",)}, "trusted_sha256"),
    ],
)
def test_config_rejects_bad_values(changes, word):
    with pytest.raises(ValueError, match=word):
        TranslateConfig(**changes)


def test_decode_text_equals_the_hubs_decode(bt_translator):
    """Every direction's dictionary, random ids including eos, bos, pad, unk and ids past the dictionary."""
    import torch

    rng = random.Random(0)
    for direction, hub in bt_translator._hubs.items():
        d = hub.tgt_dict
        specials = [d.eos(), d.bos(), d.pad(), d.unk(), len(d.symbols), len(d.symbols) + 5]
        for _ in range(50):
            ids = [rng.choice(specials) if rng.random() < 0.2 else rng.randrange(len(d.symbols))
                   for _ in range(rng.randint(0, 30))]
            tokens = torch.tensor(ids, dtype=torch.long)
            assert translation_decode.decode_text(hub, tokens) == hub.decode(tokens), (direction, ids)


def test_binarize_and_encode_text_equal_the_hubs(bt_translator, bt_items):
    """binarize / encode_text give the hub's binarize / encode tensors (ids, dtype, <unk> for unknown symbols,
    </s> last) on captions, pivots, odd whitespace and symbols missing from the dictionary."""
    import torch

    rng = random.Random(3)
    for direction, hub in bt_translator._hubs.items():
        symbols = hub.src_dict.symbols
        lines = [text for _, _, text in bt_items] + ["", "  ", "\tzz\u00a0 qq@@  x\n", "<unk> </s> <pad>"]
        lines += [" ".join(rng.choice(symbols + ["@@", "zzzz", "\u044f\u0436"]) for _ in range(rng.randint(0, 20)))
                  for _ in range(50)]
        for line in lines:
            expected = hub.binarize(line)
            got = translation_decode.binarize(hub.src_dict, line)
            assert got.dtype == expected.dtype and torch.equal(got, expected), (direction, line)
        for _, _, text in bt_items:
            assert torch.equal(translation_decode.encode_text(hub, text), hub.encode(text)), (direction, text)


def test_the_compared_setting_equals_fairseq_hub_translate_list(bt_translator, bt_items):
    """The benchmark's output check: with beam search on both legs and a fixed length limit, every pivot and
    paraphrase equals fairseq's hub translate(list) on the same captions."""
    from bench.backtranslate import hub_list_baseline, our_outputs

    t = bt_translator.derive(forward_sampling=False, back_sampling=False, max_len_a=1e-6, max_len_b=30,
                             drop_unk=False, length_ratio=float("inf"))
    items = bt_items[:24]
    assert our_outputs(t(items), items, t.cfg.pivots) == hub_list_baseline(t, items, t.cfg)


@pytest.mark.parametrize("sampling", [False, True])
def test_tokens_only_ensemble_gives_the_stock_generators_hypotheses(bt_translator, bt_items, sampling):
    """TokensOnlyEnsemble (no attention record, no encoder reorder while the batch keeps its rows) returns
    every hypothesis of every beam with the same tokens, scores and positional scores as fairseq's stock
    EnsembleModel, also after sentences of different lengths leave the batch at different steps."""
    import torch
    from fairseq.data import data_utils

    hub = bt_translator._hubs["en-de"]
    leg = translation_decode.LegSettings(sampling, 3 if sampling else 0, 0.0, 1 if sampling else 4, 1.0, 1.0, 1.2, 3)
    tokens = [hub.encode(text) for _, _, text in bt_items]
    limits = [translation_decode.row_limit(t.numel(), leg.max_len_a, leg.max_len_b, 200) for t in tokens]
    assert len(set(limits)) > 1  # rows finish at different steps: the batch shrinks mid-decoding
    src = data_utils.collate_tokens(tokens, hub.src_dict.pad(), hub.src_dict.eos(), left_pad=True)
    sample = {
        "id": torch.tensor(translation_decode.pack_row_ids(list(range(len(tokens))), limits)),
        "net_input": {"src_tokens": src, "src_lengths": torch.tensor([t.numel() for t in tokens])},
    }
    runs = []
    for tokens_only in (True, False):
        gen = translation_decode.build_generator(hub, leg, tokens_only=tokens_only)
        assert isinstance(gen.model, translation_decode.TokensOnlyEnsemble) == tokens_only
        runs.append(hub.task.inference_step(gen, hub.models, sample))
    fast, stock = runs
    for fast_hypos, stock_hypos in zip(fast, stock, strict=True):
        assert len(fast_hypos) == len(stock_hypos)
        for f, s in zip(fast_hypos, stock_hypos, strict=True):
            assert torch.equal(f["tokens"], s["tokens"])
            assert torch.equal(f["score"], s["score"])
            assert torch.equal(f["positional_scores"], s["positional_scores"])
