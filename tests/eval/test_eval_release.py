"""ssrp export hf / ssrp.load: SSRP-Cross loads into transformers' LxmertModel with the same outputs; every variant
round-trips through its documented safetensors layout; the model card carries the corpus and the metrics."""

import argparse
import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import LxmertConfig, LxmertModel

import ssrp
from ssrp.config import to_dict
from ssrp.eval.cli import register
from ssrp.eval.lxmert import key_map, lxmert_config, to_lxmert
from ssrp.eval.release import ReleaseError, export_hf
from ssrp.train.checkpoint import CKPT_FORMAT, load_checkpoint, state_digest, train_config_of
from ssrp.train.config import ModelConfig, make_config
from ssrp.train.model import SSRPEncoder
from ssrp.train.steps import Stage2Model

TINY = {"hidden": 32, "heads": 2, "intermediate": 64, "text_layers": 2, "visual_layers": 1, "inter_layers": 2,
        "feature_dim": 16, "vocab_size": 60, "max_positions": 64, "num_object_labels": 12}


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssrp")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, LayerNorms and biases included (BERT's init leaves them at 1 and 0, which would
    hide a swapped weight/bias or a LayerNorm mapped to the wrong sub-layer)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return module.eval()


def _inputs(batch: int = 3, tokens: int = 9, objects: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(batch, tokens, dtype=torch.bool)
    text_mask[1, 6:] = False
    text_mask[2, 3:] = False
    object_mask = torch.ones(batch, objects, dtype=torch.bool)
    object_mask[0, 4:] = False
    xy = torch.rand(batch, objects, 2, generator=gen) * 0.6
    return {"input_ids": torch.randint(5, TINY["vocab_size"], (batch, tokens), generator=gen), "text_mask": text_mask,
            "features": torch.randn(batch, objects, TINY["feature_dim"], generator=gen),
            "boxes": torch.cat([xy, xy + 0.3 * torch.rand(batch, objects, 2, generator=gen)], -1),
            "object_mask": object_mask}


def _lxmert(model: LxmertModel, x: dict[str, torch.Tensor]):
    with torch.no_grad():
        return model(input_ids=x["input_ids"], attention_mask=x["text_mask"].long(), visual_feats=x["features"],
                     visual_pos=x["boxes"], visual_attention_mask=x["object_mask"].long())


def _assert_same_states(lx_out, text: torch.Tensor, objects: torch.Tensor, x: dict, atol: float = 2e-5) -> None:
    """Real positions agree (padded ones are zeros in ssrp and computed-but-unused in LXMERT)."""
    tm, om = x["text_mask"], x["object_mask"]
    torch.testing.assert_close(lx_out.language_output[tm], text[tm], atol=atol, rtol=1e-4)
    torch.testing.assert_close(lx_out.vision_output[om], objects[om], atol=atol, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# The key map on random weights


def test_key_map_covers_every_tensor_of_both_models_once():
    cfg = ModelConfig(variant="cross", **TINY)
    pairs = key_map(cfg)
    lxmert_keys = set(LxmertModel(LxmertConfig(**lxmert_config(cfg))).state_dict()) - {"pooler.dense.weight",
                                                                                        "pooler.dense.bias"}
    assert sorted(p.lxmert for p in pairs) == sorted(lxmert_keys)  # each LXMERT tensor exactly once
    fused = {p.ssrp for p in pairs if p.part is not None}
    whole = [p.ssrp for p in pairs if p.part is None]
    assert len(whole) == len(set(whole)) and not fused & set(whole)
    assert fused | set(whole) == set(SSRPEncoder(cfg).state_dict())
    assert all(sorted(p.part for p in pairs if p.ssrp == name) == [0, 1, 2] for name in fused)


@pytest.mark.parametrize("unpad", ["on", "off"])
def test_lxmert_model_computes_what_ssrp_cross_computes(unpad):
    cfg = ModelConfig(variant="cross", unpad=unpad, **TINY)
    torch.manual_seed(0)
    encoder = _perturbed(SSRPEncoder(cfg))
    align = {"dense.weight": torch.randn(TINY["hidden"], TINY["hidden"]), "dense.bias": torch.randn(TINY["hidden"])}
    lxmert = LxmertModel(LxmertConfig(**lxmert_config(cfg))).eval()
    lxmert.load_state_dict(to_lxmert(encoder.state_dict(), cfg, align), strict=True)
    x = _inputs()
    with torch.no_grad():
        text, objects = encoder(x["input_ids"], x["text_mask"], x["features"], x["boxes"], x["object_mask"])
    out = _lxmert(lxmert, x)
    _assert_same_states(out, text, objects, x)
    pooled = torch.tanh(text[:, 0] @ align["dense.weight"].T + align["dense.bias"])  # g_align(w_CLS), Eq. 4
    torch.testing.assert_close(out.pooled_output, pooled, atol=2e-5, rtol=1e-4)


def test_a_swapped_query_and_key_would_be_caught():
    """The equality test has teeth: exchanging two rows-blocks of one fused projection changes the outputs."""
    cfg = ModelConfig(variant="cross", **TINY)
    torch.manual_seed(0)
    encoder = _perturbed(SSRPEncoder(cfg))
    state = to_lxmert(encoder.state_dict(), cfg)
    name = "encoder.x_layers.0.visual_attention.att"
    state[f"{name}.query.weight"], state[f"{name}.key.weight"] = state[f"{name}.key.weight"], state[f"{name}.query.weight"]
    lxmert = LxmertModel(LxmertConfig(**lxmert_config(cfg))).eval()
    lxmert.load_state_dict(state, strict=False)
    x = _inputs()
    with torch.no_grad():
        text, _ = encoder(x["input_ids"], x["text_mask"], x["features"], x["boxes"], x["object_mask"])
    assert (_lxmert(lxmert, x).language_output[x["text_mask"]] - text[x["text_mask"]]).abs().max() > 1e-3


def test_only_cross_with_lxmert_layer_norms_has_the_lxmert_layout():
    with pytest.raises(ValueError, match="only SSRP-Cross"):
        key_map(ModelConfig(variant="visual", **TINY))
    with pytest.raises(ValueError, match="layer_norm_eps"):
        key_map(ModelConfig(variant="cross", layer_norm_eps=1e-5, **TINY))


# ------------------------------------------------------------------------------------------------
# Export from the trained runs, load back


@pytest.fixture(scope="module")
def release(runs, corpus, tmp_path_factory, probe_model):
    out = tmp_path_factory.mktemp("release") / "ssrp-cross"
    probe_json = tmp_path_factory.mktemp("metrics") / "probe.json"
    probe_json.write_text(json.dumps({"checkpoint": runs["stage2"], "corpus": corpus, "model_variant": "cross",
                                      "images": 16, "spearman_lengths": [5, 50],
                                      "variants": {"raw": {"sentences": 32, "edges": 200, "uuas": 0.4321,
                                                           "spearman": 0.6543}},
                                      "stability": {"R_v": {"groups": 16, "matrix": {"same": 0.9, "unrelated": 0.5,
                                                                                     "gap": 0.4}}}}))
    assert cli(["export", "hf", "--ckpt", runs["stage2"], "--stage1", runs["stage1"], "--corpus", corpus,
                "--out", str(out), "--metrics", str(probe_json)]) == 0
    return str(out)


def _batch(probe_model, n: int = 6) -> dict[str, torch.Tensor]:
    from ssrp.eval.inference import Pair
    from ssrp.eval.select import caption_pairs

    pairs = [Pair(p.image_id, p.caption_id) for p in caption_pairs(probe_model.reader, [1, 2, 3])][:n]
    return probe_model.collate([probe_model.sample(p)[0] for p in pairs])


def test_lxmert_from_pretrained_loads_the_release_and_gives_ssrp_outputs(release, probe_model):
    model, info = LxmertModel.from_pretrained(release, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = _batch(probe_model)
    with torch.no_grad():
        text, objects = probe_model.model.encoder(x["input_ids"], x["text_mask"], x["features"], x["boxes"],
                                                  x["object_mask"])
        pooled = probe_model.align.f_align(text, objects, x["object_mask"])
    out = _lxmert(model.eval(), {**x, "features": x["features"].float()})
    _assert_same_states(out, text, objects, x)
    torch.testing.assert_close(out.pooled_output, pooled, atol=2e-5, rtol=1e-4)


def test_ssrp_load_gives_the_checkpoint_back_with_its_probes(release, runs, probe_model):
    loaded = ssrp.load(release)
    ckpt = load_checkpoint(runs["stage2"])
    for key, value in loaded.encoder.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][f"encoder.{key}"], atol=0, rtol=0)
    for key, value in loaded.probes.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][f"heads.{key}"], atol=0, rtol=0)
    x = _batch(probe_model)
    with torch.no_grad():
        text, objects = loaded(x["input_ids"], x["text_mask"], x["features"], x["boxes"], x["object_mask"])
        rel = loaded.relations(text, objects, x["piece_word"], x["object_mask"])
        want = probe_model.model.heads.relations(text, objects, x)
    torch.testing.assert_close(rel["r_w"], want["r_w"])
    torch.testing.assert_close(rel["r_v"], want["r_v"])
    assert loaded.align is not None and loaded.info["heads"] == ["probes", "align"]


def test_release_files_config_and_model_card(release, corpus):
    assert sorted(os.listdir(release)) == ["README.md", "config.json", "heads.safetensors", "model.safetensors"]
    config = json.loads(open(os.path.join(release, "config.json")).read())
    assert config["model_type"] == "lxmert" and config["architectures"] == ["LxmertModel"]
    assert (config["l_layers"], config["r_layers"], config["x_layers"], config["visual_feat_dim"]) == (2, 1, 1, 16)
    heads = load_file(os.path.join(release, "heads.safetensors"))
    assert {k.split(".")[0] for k in heads} == {"probes", "align"}
    card = open(os.path.join(release, "README.md")).read()
    manifest = json.loads(open(os.path.join(corpus, "manifest.json")).read())
    assert manifest["config_hash"] in card  # the corpus's identity
    assert "| raw | 32 | 0.432 | 0.654 |" in card  # the metrics given
    assert "| peak learning rate | 0.001 | 0.001 |" in card  # both stages' settings (tiny preset)
    assert card.startswith("---\nlibrary_name: transformers\n")


def test_export_without_g_align_leaves_the_pooler_out(runs, tmp_path, caplog):
    out = tmp_path / "r"
    export_hf(runs["stage2"], str(out))
    assert "pooler.dense.weight" not in load_file(str(out / "model.safetensors"))
    assert "pooler is not in the release" in caplog.text
    assert ssrp.load(str(out)).align is None
    card = (out / "README.md").read_text()
    assert "TODO: the training corpus was not given" in card and "| raw | TODO | TODO |" in card


def _checkpoint(model: torch.nn.Module, cfg, path: str) -> str:
    """A checkpoint file in the trainer's format (digest included) of a model built here."""
    state = {"format": CKPT_FORMAT, "stage": cfg.stage, "variant": cfg.model.variant, "config": to_dict(cfg),
             "step": 7, "epoch": 0, "batch": 7, "model": model.state_dict(), "optimizer": {}, "scheduler": {},
             "rng": {"torch": torch.get_rng_state(), "cuda": []}}
    state["digest"] = state_digest(state)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("variant", ["share", "visual"])
def test_share_and_visual_round_trip_through_the_ssrp_layout(variant, tmp_path):
    cfg = make_config("stage2", variant, "tiny", [f"model.{k}={v}" for k, v in TINY.items() if k != "inter_layers"])
    torch.manual_seed(0)
    model = _perturbed(Stage2Model(cfg))
    ckpt = _checkpoint(model, cfg, str(tmp_path / "checkpoint.pt"))
    out = str(tmp_path / "release")
    summary = export_hf(ckpt, out)
    assert summary["layout"] == "ssrp" and summary["heads"] == ["probes"]
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert "model_type" not in config and config["ssrp"]["variant"] == variant
    weights = load_file(os.path.join(out, "model.safetensors"))
    assert set(weights) == set(model.encoder.state_dict())  # SSRPEncoder's own names, documented
    loaded = ssrp.load(out)
    x = _inputs()
    with torch.no_grad():
        want = model.encoder(x["input_ids"], x["text_mask"], x["features"], x["boxes"], x["object_mask"])
        got = loaded(x["input_ids"], x["text_mask"], x["features"], x["boxes"], x["object_mask"])
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    with pytest.raises(ValueError, match="only SSRP-Cross"):
        export_hf(ckpt, str(tmp_path / "other"), layout="lxmert")


def test_a_vocab_other_than_the_corpus_tokenizer_is_refused(runs, corpus, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n")
    manifest = json.loads(open(os.path.join(corpus, "manifest.json")).read())
    fake = tmp_path / "corpus"
    fake.mkdir()
    manifest["models"] = {"parse": {"vocab_sha256": "0" * 64}}
    (fake / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="tokenised with a vocab.txt of sha256 000000000000"):
        export_hf(runs["stage1"], str(tmp_path / "r"), corpus=str(fake), vocab=str(vocab))
    export_hf(runs["stage1"], str(tmp_path / "r"), vocab=str(vocab))  # no corpus to check against: copied
    assert (tmp_path / "r" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    assert ssrp.load(str(tmp_path / "r")).probes is None  # a stage-1 export has g_align, no probes


def test_broken_releases_are_named(release, tmp_path):
    with pytest.raises(ReleaseError, match="not an ssrp release"):
        ssrp.load(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads(open(os.path.join(release, "config.json")).read())
    config["ssrp"]["model"]["hidden"] = 64
    config["ssrp"]["model"]["intermediate"] = 128
    (broken / "config.json").write_text(json.dumps(config))
    for name in ("model.safetensors", "heads.safetensors"):
        os.link(os.path.join(release, name), broken / name)
    with pytest.raises(ReleaseError, match="does not fit its config.json"):
        ssrp.load(str(broken))


def test_legacy_export_form_still_writes_the_features_file(runs, corpus, tmp_path, capsys):
    out = tmp_path / "feats.h5"
    assert cli(["export", "--ckpt", runs["stage2"], "--corpus", corpus, "--out", str(out), "--max-images", "2",
                "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2 and out.exists()
    with pytest.raises(ValueError, match="needs --corpus"):
        cli(["export", "features", "--ckpt", runs["stage2"], "--out", str(out)])


def test_stage_configs_survive_the_release(release, runs):
    cfg = train_config_of(load_checkpoint(runs["stage2"]))
    assert ssrp.load(release).config == cfg.model
