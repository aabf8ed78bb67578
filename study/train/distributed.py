"""The process group as the trainer sees it (rank, world size, the few collectives it needs), and the one place
that reads a launcher's variables and starts the group they describe.

The trainer never starts a process group itself: `launched_group` does it for `study train` / `study eval` when
a launcher started the process (torchrun, `study train --nproc-per-node`, submitit's job through
`TorchDistributedEnvironment().export()`); a test may start one itself. The trainer uses whatever group is
initialised (none = one process).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

# How long a collective may wait for the slowest rank before the group gives up (a rank writing a checkpoint or
# evaluating can keep the others waiting for minutes; a dead rank should not hang a job forever).
COLLECTIVE_TIMEOUT = _dt.timedelta(minutes=30)


@dataclass(frozen=True)
class Launch:
    """Which process of a launch this is: the launcher's contract, not configuration. torchrun, this package's
    own `study train --nproc-per-node` and submitit's TorchDistributedEnvironment().export() all start each
    process with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set; `from_env` is
    the only reader of these variables in the package, and `env` the only writer."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    master_addr: str
    master_port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Launch | None:
        """This process's launch, or None when no launcher started it (no RANK / WORLD_SIZE)."""
        if "RANK" not in environ or "WORLD_SIZE" not in environ:
            return None
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        return cls(rank=rank, world=world, local_rank=int(environ.get("LOCAL_RANK", rank)),
                   local_world=int(environ.get("LOCAL_WORLD_SIZE", world)),
                   master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
                   master_port=int(environ.get("MASTER_PORT", "29500")))

    def env(self) -> dict[str, str]:
        """The variables a launcher sets for this process (`study train --nproc-per-node` starts its workers so)."""
        return {"RANK": str(self.rank), "WORLD_SIZE": str(self.world), "LOCAL_RANK": str(self.local_rank),
                "LOCAL_WORLD_SIZE": str(self.local_world), "MASTER_ADDR": self.master_addr,
                "MASTER_PORT": str(self.master_port)}


@contextlib.contextmanager
def launched_group(*, cuda: bool) -> Iterator[Launch | None]:
    """For the block: the process group of this process's launch (nccl with one GPU per local rank when the run
    trains on GPUs, gloo on CPU), destroyed afterwards. Nothing happens when no launcher started the process or
    a group is already initialised (a test's, a job's)."""
    launch = Launch.from_env()
    if launch is None or dist.is_initialized():
        yield launch
        return
    start_group(launch, cuda=cuda)
    try:
        yield launch
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def start_group(launch: Launch, *, cuda: bool) -> None:
    """Start the process group of `launch`: on GPUs, this process's GPU (its local rank among the visible
    ones) becomes the current device and the backend is nccl; on CPU, gloo."""
    if cuda:
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://", rank=launch.rank,
                            world_size=launch.world, timeout=COLLECTIVE_TIMEOUT)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    grouped: bool = False  # a process group is initialised (also one of a single process: FSDP on one GPU)

    @classmethod
    def current(cls) -> Dist:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), True)
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.grouped or self.world > 1

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
