"""Session-wide test settings."""

import os
import tempfile

import pytest


def pytest_configure(config):
    # The translation stage signs the checksums of the models it builds with a per-user key; tests use
    # their own key so they never touch (or depend on) the user's.
    os.environ.setdefault("SSRP_TRUST_KEY", os.path.join(tempfile.mkdtemp(prefix="ssrp-test-key-"), "trust.key"))
    # Two cores shared by torch, Beam and Stanza: one thread each avoids oversubscription.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from more threads, and two shared cores lose a lot to oversubscription."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
