import pytest


@pytest.fixture(scope="session")
def tiny_translation(tmp_path_factory):
    """The four tiny fairseq models in the official layout (built once), to pack into archives."""
    pytest.importorskip("fairseq", reason="fairseq-fixed is not installed (make install)")
    from ssrp.translate.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny_translation")
    build_tiny(str(root))
    return str(root / "translate")
