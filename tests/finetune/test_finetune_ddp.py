"""Two gloo ranks compute the gradients of one process on the same global batch."""

import socket

import pytest
import torch
import torch.multiprocessing as mp
from finetune_helpers import ddp_gradients, ddp_worker

from ssrp.train.distributed import DistInfo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_give_the_single_process_gradients(tmp_path, inputs_for):
    inputs = inputs_for("vqa")
    out = str(tmp_path / "grads.pt")
    mp.spawn(ddp_worker, args=(2, _free_port(), inputs, out), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)
    single = ddp_gradients(inputs, DistInfo(), range(8))
    assert set(single) == set(distributed) and any(k.startswith("relations.") for k in single)
    for name, grad in single.items():
        assert torch.allclose(grad, distributed[name], rtol=1e-4, atol=1e-6), name
