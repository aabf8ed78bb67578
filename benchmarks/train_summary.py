"""Tokens/s and MFU of a trainer run, from its own run directory (metrics.jsonl, eval.jsonl, run.json).

    python3 benchmarks/train_summary.py RUN_DIR --out benchmarks/results/gpu/train130m.json [--name train130m]

The trainer logs tokens/s and MFU once per log window (every row of a window carries the window's values).
Reported: every window's values; the median over the steady windows, i.e. without the first one (it holds
torch.compile and the first steps' warm-up) and without those that held an evaluation or a checkpoint
(their time is the trainer's, not the step's); the run's state, steps, eval rows, device, world size and
whether its checkpoints are sharded (FSDP's DCP layout).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common


def summary(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines() if line.strip()] \
        if (run_dir / "eval.jsonl").exists() else []
    run = json.loads((run_dir / "run.json").read_text())
    config = (run_dir / "config.yaml").read_text()
    ckpt_every = next((int(line.split(":")[1]) for line in config.splitlines()
                       if line.strip().startswith("ckpt_every:")), None)
    windows, start = [], 1  # (first step, last step, tokens/s, mfu) per log window
    for i, r in enumerate(rows):
        if i + 1 == len(rows) or rows[i + 1]["tokens_per_s"] != r["tokens_per_s"]:
            windows.append((start, r["step"], r["tokens_per_s"], r["mfu"]))
            start = r["step"] + 1
    busy = {e["step"] for e in evals} | ({s for s in range(1, rows[-1]["step"] + 1) if s % ckpt_every == 0}
                                         if ckpt_every else set())
    steady = [w for w in windows[1:] if w[0] - 1 not in busy]

    def median(k):  # over the steady windows; MFU is None on a CPU (no peak FLOP/s)
        values = [w[k] for w in steady if w[k] is not None]
        return statistics.median(values) if values else None

    status = json.loads((run_dir / "status.json").read_text())
    return {"run": run_dir.name, "state": status["state"], "steps": rows[-1]["step"], "tokens": rows[-1]["tokens"],
            "device": run.get("device"), "precision": run.get("precision"), "world_size": run.get("world_size"),
            "params": run.get("params"), "ranks": run.get("provenance", {}).get("ranks"),
            "wall_s_first_to_last_row": rows[-1]["time"] - rows[0]["time"],
            "tokens_per_s_steady_median": median(2), "mfu_steady_median": median(3),
            "windows": [{"first_step": a, "last_step": b, "tokens_per_s": t, "mfu": m} for a, b, t, m in windows],
            "steady_windows": len(steady), "eval": evals,
            "sharded_checkpoint": any((run_dir / "checkpoints").glob("step_*/dcp"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--name", default="train_summary")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    numbers = summary(Path(args.run_dir))
    tps, mfu = numbers["tokens_per_s_steady_median"], numbers["mfu_steady_median"]
    print(f"{numbers['run']}: {numbers['state']} at step {numbers['steps']}, steady "
          f"{tps if tps is None else f'{tps:,.0f}'} tokens/s, MFU {mfu if mfu is None else f'{mfu:.1%}'}")
    common.write_result(args.name, args.device, numbers, args.out)


if __name__ == "__main__":
    main()
