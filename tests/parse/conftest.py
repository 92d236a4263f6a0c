"""Shared fixtures of the parse tests: the tiny models are trained once per session (about 10 s)."""

import pytest

from ssrp.parse import ParseConfig, Parser


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> str:
    from ssrp.parse.tiny import build_tiny

    root = tmp_path_factory.mktemp("parse-models")
    build_tiny(str(root))
    return str(root)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_models) -> ParseConfig:
    return ParseConfig(models_dir=tiny_models, device="cpu")


@pytest.fixture(scope="session")
def tiny_parser(tiny_cfg) -> Parser:
    return Parser(tiny_cfg).load()


@pytest.fixture(scope="session")
def vocab_path(tiny_models) -> str:
    return f"{tiny_models}/bert/vocab.txt"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread avoids oversubscription (restored after each module)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
