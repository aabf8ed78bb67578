"""ProRes overhead: training step time with schedule `linear` mid-warmup (alphas strictly between 0 and 1) vs
schedule `none` (alpha = 1), eager and compiled, interleaved in one process.

    .venv/bin/python benchmarks/prores_overhead.py                 # CPU fp32, small preset
    .venv/bin/python benchmarks/prores_overhead.py --device cuda --scale 130m --seq 1024 --batch 8
    .venv/bin/python benchmarks/prores_overhead.py --no-compile    # eager only

The two models are identical except for the alpha values written into the buffers (the same code path runs:
alpha is a buffer, never a Python constant), plus, for `linear`, set_alphas before every step as the trainer
does. Overhead % = (t_linear / t_none - 1) * 100; goals: <= 2% eager, <= 0.5% compiled.
Writes benchmarks/results/prores_overhead.json.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401
import torch


def main(argv=None) -> int:
    from study import prores
    from study.config import resolve
    from study.model import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = args.device
    cfg = resolve({"model": {"scale": args.scale, "seq_len": args.seq}}).model
    L = cfg.n_layers
    step_mid = args.T * L // 4  # linear: alpha_l = min(t / (T l), 1); at T·L/4 the deeper layers are mid-ramp
    alphas_mid = prores.alphas("linear", step_mid, L, args.T)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g).to(dev)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g).to(dev)
    bf16 = dev.startswith("cuda")

    def make(schedule: str, compiled: bool):
        torch.manual_seed(0)
        model = build_model(cfg).to(dev)
        fwd = torch.compile(model) if compiled else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=bf16)
        model.set_alphas([1.0] * L)
        before = (lambda: model.set_alphas(alphas_mid)) if schedule == "linear" else None  # as the trainer does
        return common.training_step(fwd, opt, x, y, before=before)

    results = {"scale": args.scale, "seq": args.seq, "batch": args.batch, "alphas_mid": list(map(float, alphas_mid))}
    modes = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    for mode, compiled in modes:
        try:
            # 'none (control)' is a second, identical plain model: its difference to 'none' is the noise floor.
            fns = {"none": make("none", compiled), "linear": make("linear", compiled),
                   "none (control)": make("none", compiled)}
            res = common.interleaved(fns, reps=args.reps, warmup=3 if compiled else 1, device=dev)
        except Exception as exc:  # e.g. no C compiler for inductor on this machine
            results[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"{mode}: could not run: {results[mode]['error']}")
            continue
        over = (res["linear"]["median_s"] / res["none"]["median_s"] - 1) * 100
        goal = 2.0 if mode == "eager" else 0.5
        control = (res["none (control)"]["median_s"] / res["none"]["median_s"] - 1) * 100
        results[mode] = {"none_median_s": res["none"]["median_s"], "linear_median_s": res["linear"]["median_s"],
                         "control_median_s": res["none (control)"]["median_s"], "overhead_pct": over,
                         "control_pct": control, "goal_pct": goal, "reps": args.reps}
        print(f"{mode}: none {res['none']['median_s']*1e3:.1f} ms  linear {res['linear']['median_s']*1e3:.1f} ms  "
              f"overhead {over:+.2f}% (goal <= {goal}%); identical control model {control:+.2f}% (noise floor)")
    common.write_result("prores_overhead", dev, results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
