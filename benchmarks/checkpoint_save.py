"""Checkpoint save time per scale, and how long training stalls when the save is asynchronous (study.train.
checkpointer), side by side in one run.

    .venv/bin/python benchmarks/checkpoint_save.py                       # tiny, 71m, 130m on this CPU
    .venv/bin/python benchmarks/checkpoint_save.py --scales 130m --rounds 3

Per scale: the model and its AdamW state after one step (the state a checkpoint holds: fp32 weights + two
moments), saved through the trainer's Checkpointer in the single-file layout, rounds alternating:
- sync: save(wait=True), the whole write: host snapshot, torch.save, sha256, fsync, manifest, rename;
- async: save() returns after the snapshot (the stall: what training waits for), then training steps run
  while the write goes on in the background; each step's time is compared with steps run with no save in
  flight, and the extra time is reported too (on a CPU the writer thread competes with training for cores and
  memory bandwidth; on a GPU training runs on the device);
- baseline: the same number of steps with no save.
Training steps: forward, backward and AdamW on a small batch (`--seq`, `--batch`), one intra-op thread.
Writes benchmarks/results/checkpoint_save.json; the goal is a stall of at most 10% of the synchronous save.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common
import torch


def _setup(scale: str, seq: int, batch: int, device: str):
    from study.config import resolve
    from study.model import build_model
    from study.train.optim import build_optimizer, build_scheduler

    cfg = resolve({"model": {"scale": scale}, "train": {"steps": 1000}})
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    opt = build_optimizer(model, cfg.optim, device=torch.device(device))
    sched = build_scheduler(opt, cfg.optim, cfg.train.steps)
    ids = torch.randint(0, cfg.model.vocab_size, (batch, seq + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:]
    step = common.training_step(model, opt, x, y)
    step()  # AdamW state exists from here on
    return model, opt, sched, step


def _timed(step) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def measure(scale: str, args, root: Path) -> dict:
    from study.train.checkpointer import Checkpointer
    from study.train.distributed import Dist

    model, opt, sched, step = _setup(scale, args.seq, args.batch, args.device)
    saver = Checkpointer(root / scale, Dist(), sharded=False, keep=1)
    n = 0

    def save(wait):
        nonlocal n
        n += 1
        saver.save(n, model=model, optimizer=opt, scheduler=sched, trainer_state={"data": {}},
                   state={"step": n}, wait=wait)
        return saver.last_stall_s

    save(True)  # first save: allocates the host copy that later saves reuse
    sync_s, stall_s, during, baseline, counts = [], [], [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        save(True)
        sync_s.append(time.perf_counter() - t0)
        stall_s.append(save(False))
        steps = []
        while saver.busy:
            steps.append(_timed(step))
        saver.wait()
        during += steps
        counts.append(len(steps))
        baseline += [_timed(step) for _ in range(max(2, len(steps)))]
    base = statistics.median(baseline)
    extra = sum(during) - len(during) * base
    sync = statistics.median(sync_s)
    stall = statistics.median(stall_s)
    size = sum(p.stat().st_size for p in (root / scale).rglob("*.pt"))
    return {"scale": scale, "checkpoint_bytes": size, "sync_save_median_s": sync, "sync_save_all_s": sync_s,
            "async_stall_median_s": stall, "async_stall_all_s": stall_s, "stall_over_sync": stall / sync,
            "steps_during_write": counts, "step_median_s_no_save": base,
            "step_median_s_during_write": statistics.median(during) if during else None,
            "extra_step_time_per_save_s": extra / args.rounds,
            "extra_over_sync": extra / args.rounds / sync}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="tiny,71m,130m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write the checkpoints (default: a temporary folder)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for scale in args.scales.split(","):
            row = measure(scale, args, Path(tmp))
            rows.append(row)
            print(f"{scale}: {row['checkpoint_bytes'] / 1e9:.2f} GB, sync save {row['sync_save_median_s']:.2f} s, "
                  f"async stall {row['async_stall_median_s']:.3f} s ({100 * row['stall_over_sync']:.1f}% of sync), "
                  f"extra step time while writing {row['extra_step_time_per_save_s']:.2f} s per save")
    common.write_result("checkpoint_save", args.device, {"rows": rows, "seq": args.seq, "batch": args.batch,
                                                         "rounds": args.rounds, "threads": 1,
                                                         "goal": "async stall <= 10% of the sync save"}, args.out)


if __name__ == "__main__":
    main()
