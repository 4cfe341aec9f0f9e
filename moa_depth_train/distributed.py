"""Multi-GPU (and multi-process CPU) training with DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node N -m moa_depth_train.cli.train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; each process trains on its own shard of every global batch. Rank r uses
``cuda:<LOCAL_RANK>`` (NCCL) or the CPU (gloo). ``optim.batch_size`` is per process, so the
global batch is batch_size × N. Only rank 0 logs, validates and writes the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, requested: torch.device) -> torch.device:
        """This process's device: its own GPU under torchrun, else the requested one."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """True when ``flag`` holds on every rank (so all ranks take the same branch)."""
        if not self.enabled:
            return flag
        value = torch.tensor(1.0 if flag else 0.0, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the ranks (for logging the global loss)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def gather(self, obj: object) -> list[object]:
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class EpochSampler(Sampler):
    """A seeded permutation per epoch, shared by all ranks; rank r takes positions
    r, r + N, r + 2N, ... of each global batch. ``skip`` drops the samples already consumed
    (resume mid-epoch). Yields ``(epoch, index)`` so datasets draw that epoch's augmentation.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[self.skip :].tolist()
        usable = len(order) - len(order) % self.world_size
        return order[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter((self.epoch, index) for index in self._order())

    def __len__(self) -> int:
        return len(self._order())
