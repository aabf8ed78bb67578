"""`study run GRID --jobs 2` against `--jobs 1` on 4 tiny cells, side by side in alternating rounds.

    .venv/bin/python benchmarks/run_jobs.py [--steps 100] [--rounds 2]

The grid is 4 cells of the quickstart's setup (grids/base/cpu.yaml: tiny model, 16 x 128 tokens per step,
held-out eval every 50 steps, probes every 25), Pre-LN without and with ProRes at seeds 0 and 1, `--steps` steps
each. Every round trains the grid twice from an empty results root, once with each --jobs (the order alternates
between rounds), as the command a user types: `python -m study run GRID --jobs N` in a subprocess, wall time
from start to exit (process start-up included). The tokenizer is built once beforehand into a shared cache, as a
second `study run` would find it. Also recorded: the CPU seconds of each command (getrusage of the reaped
children: every process and thread), the load average before each, and whether the two commands' final weights
are bit-identical (they must be). Writes benchmarks/results/run_jobs.json; the goal is >= 1.6x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import yaml

REPO = Path(__file__).resolve().parent.parent


def _grid(folder: Path, cache_dir: Path, steps: int) -> Path:
    path = folder / "jobs-bench.yaml"
    path.write_text(yaml.safe_dump({
        "name": "jobs-bench", "base_file": str(REPO / "grids" / "base" / "cpu.yaml"),
        "base": {"model": {"scale": "tiny"}, "data": {"cache_dir": str(cache_dir)},
                 "train": {"steps": steps, "progress": False}},
        "axes": {"method": ["pre-ln"],
                 "schedule": ["none", {"label": "linear-W36", "prores.schedule": "linear", "prores.W": 36}],
                 "seed": [0, 1]}}))
    return path


def _study_run(grid: Path, out: Path, jobs: int) -> dict:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "study", "-q", "run", str(grid), "--out", str(out),
                          "--jobs", str(jobs)], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0 or "summary: 4 completed" not in res.stdout:
        raise SystemExit(f"study run --jobs {jobs} failed:\n{res.stdout}\n{res.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load}


def _final_weights(root: Path) -> dict:
    import torch

    out = {}
    for latest in sorted(root.glob("jobs-bench/*/checkpoints/latest")):
        out[latest.parent.parent.name] = torch.load(latest.parent / latest.read_text().strip() / "model.pt",
                                                    weights_only=True)
    return out


def _identical(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and len(a) == 4 and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in ((a[n], b[n]) for n in a))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from study import config
    from study.data import build_tokenizer
    from study.jobs import available_cores

    with tempfile.TemporaryDirectory(prefix="jobs-bench-") as tmp:
        tmp = Path(tmp)
        grid = _grid(tmp, tmp / "cache", args.steps)
        cfg = config.load(REPO / "grids" / "base" / "cpu.yaml", ["model.scale=tiny", f"data.cache_dir={tmp / 'cache'}"])
        build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)  # once, as a second `study run` finds it
        runs: dict[int, list[dict]] = {1: [], 2: []}
        identical = []
        for r in range(args.rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            roots = {}
            for jobs in order:
                roots[jobs] = tmp / f"round{r}-jobs{jobs}"
                runs[jobs].append(_study_run(grid, roots[jobs], jobs))
                print(f"round {r + 1}: --jobs {jobs}: {runs[jobs][-1]['wall_s']:.1f} s wall, "
                      f"{runs[jobs][-1]['cpu_s']:.1f} CPU-s (load before {runs[jobs][-1]['load_before']:.2f})")
            identical.append(_identical(_final_weights(roots[1]), _final_weights(roots[2])))
    med = {j: statistics.median(x["wall_s"] for x in runs[j]) for j in runs}
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs[1], runs[2], strict=True)]
    numbers = {"cells": 4, "steps": args.steps, "rounds": args.rounds, "cores": available_cores(),
               "jobs_1": runs[1], "jobs_2": runs[2], "median_wall_s": {"jobs_1": med[1], "jobs_2": med[2]},
               "speedup_median": med[1] / med[2], "speedup_per_round": ratios,
               "bit_identical_per_round": identical, "goal": 1.6}
    print(f"--jobs 2 vs --jobs 1: {med[1] / med[2]:.2f}x (medians {med[1]:.1f} s vs {med[2]:.1f} s; per round "
          f"{', '.join(f'{x:.2f}x' for x in ratios)}); final weights bit-identical: {all(identical)}")
    common.write_result("run_jobs", "cpu", numbers, args.out)
    return 0 if all(identical) else 1


if __name__ == "__main__":
    sys.exit(main())
