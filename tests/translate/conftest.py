import pytest

# ------------------------------------------------------------------------------------------------
# Back-translation (owner: the back-translation stage; every fixture is prefixed bt_).

# Captions in the tiny models' alphabets (COCO style), varied in length so batches sort and pad.
BT_CAPTIONS = (
    "A man riding a horse on the beach.",
    "Two dogs are playing in a field near a red bus.",
    "A cat.",
    "A black cat sitting on a table next to a plate of food and a small brown dog looking up.",
    "a woman holding an umbrella on a street",
    "Three birds flying above the water.",
    "A pizza on a wooden table in a kitchen.",
    "The train is waiting at the station while people walk by.",
    "A boat near a lake.",
    "A yellow kite flying in a blue sky above a park with many people and two dogs.",
    "a dog lying under a bench",
    "A bus on a street.",
)


@pytest.fixture(scope="session")
def bt_trust_key(tmp_path_factory):
    """Point the checkpoint trust key at a temporary file for the whole session (never ~/.local)."""
    path = str(tmp_path_factory.mktemp("bt_key") / "trust.key")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSRP_TRUST_KEY", path)
        yield path


@pytest.fixture(scope="session")
def bt_models(tmp_path_factory, bt_trust_key):
    """A models directory with the four tiny fairseq translation models (built once)."""
    pytest.importorskip("fairseq", reason="fairseq-fixed is not installed (make install)")
    pytest.importorskip("fastBPE", reason="fastBPE is not installed (make install)")
    from ssrp.translate.tiny import build_tiny

    root = tmp_path_factory.mktemp("bt_models")
    build_tiny(str(root))
    return str(root)


@pytest.fixture(scope="session")
def bt_translator(bt_models):
    """A loaded BackTranslator on the tiny models without the length filter (so most captions keep
    both paraphrases); tests derive other settings from it with ``derive``."""
    from ssrp.translate.stage import BackTranslator, TranslateConfig

    return BackTranslator(TranslateConfig(models_dir=bt_models, device="cpu", length_ratio=float("inf"))).load()


@pytest.fixture(scope="session")
def bt_items():
    return [(100 + i, 10 + i // 5, text) for i, text in enumerate(BT_CAPTIONS)]


@pytest.fixture(scope="session")
def bt_reference(bt_translator, bt_items):
    """The translator's output for bt_items in one call (what other batchings must reproduce)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread avoids OpenMP oversubscription on shared cores
    try:
        return bt_translator(bt_items)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def bt_one_thread():
    """Run a back-translation test on one torch thread, restoring the count afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
