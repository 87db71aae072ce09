"""Data-parallel joint retraining on `torch.distributed`: each process of a `torchrun` job
takes its share of every mini-batch and the processes average the pool's gradient, so all of
them step to the same pool (gloo on CPUs, NCCL where GPUs are). One process: nothing changes.

Every other step (Fisher, matching, validation) runs whole in each process and gives the same
result in each: seeded, and on the same data.
"""

from __future__ import annotations

import os

import torch
from torch import distributed as dist


def init_from_environment() -> tuple[int, int]:
    """Join the job `torchrun` started this process in (its RANK/WORLD_SIZE/MASTER_* variables),
    if any and not joined yet. Returns (rank, world size); (0, 1) outside a job."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank_and_size()


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_share(indices: torch.Tensor) -> torch.Tensor:
    """This process's share of a mini-batch's sample indices (every world-size-th one)."""
    rank, size = rank_and_size()
    return indices[rank::size]


def average_across_processes(grad: torch.Tensor) -> torch.Tensor:
    """A gradient hook: the mean of this gradient over the processes (itself with one)."""
    _, size = rank_and_size()
    if size > 1:
        grad = grad.clone()
        dist.all_reduce(grad)
        grad /= size
    return grad
