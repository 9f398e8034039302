"""torch.distributed for training: started by torchrun (environment variables), nccl on GPUs, gloo on CPUs.

A single process is the same code with world size 1, so every helper here works without a process group."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device_type: str) -> DistContext:
        """Joins the process group torchrun describes (WORLD_SIZE > 1), else a single-process context."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is true on any rank (every rank gets the same answer)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([float(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def average_buffers(self, model: nn.Module) -> None:
        """Averages batch-norm running statistics over ranks (each rank saw different data)."""
        if not self.enabled:
            return
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                for buffer in (module.running_mean, module.running_var):
                    dist.all_reduce(buffer)
                    buffer.div_(self.world_size)

    def check_same(self, digest: str, what: str) -> None:
        """Raises if `digest` differs between ranks."""
        if not self.enabled:
            return
        digests: list[str | None] = [None] * self.world_size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"{what} differ across ranks: {digests}")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def masks_digest(masks: list[torch.Tensor]) -> str:
    """A SHA-256 of the masks' bits, for comparing them across ranks."""
    digest = hashlib.sha256()
    for mask in masks:
        digest.update(mask.detach().to("cpu", torch.uint8).numpy().tobytes())
    return digest.hexdigest()
