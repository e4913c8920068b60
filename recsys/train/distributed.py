"""The process-group plumbing in a few helpers, so the training loop reads as the algorithm.

TorchDistributor starts each worker with RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT set
(as torchrun does). Without them the same code runs as one plain process, for debugging.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("recsys.train")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1 or dist.is_initialized()


def init(use_gpu: bool) -> DistContext:
    """Join the process group: NCCL on GPUs, Gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_gpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        # Two workers on two cores: one thread each avoids oversubscription.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, world)))
        # Softmax tails underflow into denormal floats, which x86 CPUs compute on a slow path.
        torch.set_flush_denormal(True)
    if "MASTER_ADDR" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, device)


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True if `flag` is True on any rank (every rank gets the same answer)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(ctx: DistContext, value: Any) -> Any:
    """Rank 0's `value` on every rank (a small picklable object)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def gather(ctx: DistContext, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not ctx.distributed:
        return [value]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, value)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
