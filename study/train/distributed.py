"""The process group as the trainer sees it: rank, world size and the few collectives it needs.

The trainer never starts a process group itself: torchrun, submitit's TorchDistributedEnvironment or a test
does, and the trainer uses whatever group is initialised (none = one process).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Dist:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, *flags: bool, device) -> tuple[bool, ...]:
        """For each flag: True on every rank if it is true on any rank (one collective for all of them)."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def broadcast(self, obj):
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj, *, group=None) -> list | None:
        """Every rank's `obj` as a list on rank 0 (None elsewhere); `group`: another process group than the
        default one (the checkpoint writer's)."""
        if not self.active:
            return [obj]
        box = [None] * self.world if self.main else None
        dist.gather_object(obj, box, dst=0, group=group)
        return box

    def barrier(self) -> None:
        if self.active:
            dist.barrier()
