"""The multi-process tests' harness: run a function on `world` gloo processes on CPU and get rank 0's result.

    result = on_gloo_ranks(fn, *args, world=2)      # fn(rank, *args) in every process; rank 0's return value

`fn` must be a module-level function (mp.spawn pickles it by name) and its rank-0 return value JSON-able. Each
process uses one intra-op thread (the ranks share 2 cores) and always leaves its process group.
"""

from __future__ import annotations

import json
import os
import tempfile

import torch
import torch.multiprocessing as mp


def _entry(rank: int, world: int, init_file: str, out: str, fn, args: tuple) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = fn(rank, *args)
        if rank == 0:
            with open(out, "w") as fh:
                json.dump(result, fh)
    finally:
        dist.destroy_process_group()


def on_gloo_ranks(fn, *args, world: int = 2):
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out = os.path.join(tmp, "init"), os.path.join(tmp, "out.json")
        mp.spawn(_entry, args=(world, init_file, out, fn, args), nprocs=world, join=True)
        with open(out) as fh:
            return json.load(fh)
