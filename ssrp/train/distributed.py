"""torchrun / DDP plumbing: process-group setup, global counts, gathers with gradients.

Launch (one node, 8 GPUs)::

    torchrun --nproc_per_node 8 -m ssrp train stage1 --variant cross --corpus CORPUS --out RUN --bert MODELS/bert

Without torchrun's environment the trainer runs as a single process. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or run alone."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized():
        return DistInfo(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    info = DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"),
    )
    logger.info("rank %d of %d on %s", info.rank, info.world_size, info.device)
    return info


def all_reduce_sum(x: Tensor, info: DistInfo) -> Tensor:
    """Sum over ranks of a tensor that needs no gradient (counts, logged values)."""
    if not info.distributed:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def gather_with_grad(x: Tensor, info: DistInfo) -> tuple[Tensor, int]:
    """All ranks' ``x`` concatenated in rank order, differentiable; and this rank's row offset."""
    if not info.distributed:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x)
    return torch.cat(parts, 0), info.rank * x.shape[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_flag(value: bool, info: DistInfo) -> bool:
    """Rank 0's boolean, on every rank (e.g. "a checkpoint exists")."""
    if not info.distributed:
        return value
    t = torch.tensor([int(value)], device=info.device)
    dist.broadcast(t, 0)
    return bool(t.item())
