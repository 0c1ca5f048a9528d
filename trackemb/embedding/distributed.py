"""Device choice and torchrun (DistributedDataParallel) awareness, in one place.

Without ``RANK``/``WORLD_SIZE`` in the environment everything is a no-op single process.
Under ``torchrun`` each process joins the group (nccl on CUDA, gloo on CPU) and uses
``LOCAL_RANK``'s GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when present (this rank's GPU), else CPU. Asking for ``cuda`` without a GPU
    falls back loudly; anything else (``cpu``, ``cuda:1``) is passed to torch."""
    if pref not in ("auto", "cuda"):
        return torch.device(pref)
    if not torch.cuda.is_available():
        if pref == "cuda":
            log.warning("device='cuda' requested but CUDA is not available; running on CPU")
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def setup_distributed(device_pref: str) -> DistInfo:
    """Join the torchrun process group if the environment asks for one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
        log.info("joined process group: rank %d of %d on %s", rank, world_size, device)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, owns_group=owns)


def all_reduce_mean(x: Tensor, info: DistInfo) -> Tensor:
    """Mean of a tensor over ranks (the tensor itself when not distributed)."""
    if not info.enabled:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown_distributed(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
