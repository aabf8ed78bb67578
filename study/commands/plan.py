"""`study plan GRID --pilot PATH [--register]`: the seeds each claim needs in GRID's main stage, from a pilot.

Prints, per claim row of the pilot's claims table: its pilot seeds, the sd of its per-seed differences (and that
sd's 80% upper bound), the paper's effect moved to the pilot's perplexity level, the seeds for 80% power at the
family-corrected alpha, and the GPU-hours of those seeds (study.cost) next to the pilot's measured hours per run.
--register writes the design into ROOT/<grid>/design.json (refusing a different one unless --replace-design) and
the grid to run beside it: `study run|submit ROOT/<grid>/design-grid.yaml --out ROOT`. paper_figures/plan.py
has the method; docs/grids.md the workflow.
"""

from __future__ import annotations

import json
from pathlib import Path

from study.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("plan", help="seeds and GPU-hours per claim for a grid's main stage, from a pilot's results")
    p.add_argument("grid", help="the main stage's grid file (or a name under grids/, e.g. budget/main)")
    p.add_argument("--pilot", required=True, metavar="PATH",
                   help="the pilot's results: a results root, a grid folder or a saved collection (runs of GRID "
                        "itself are left out)")
    p.add_argument("--scale-map", default=None, metavar="OURS=PAPER,...",
                   help="judge our scales against these paper scales (default: the nearest by parameters)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--register", action="store_true",
                   help="write the design into OUT/<grid>/design.json and the grid to run beside it")
    p.add_argument("--out", default="results", help="results root of the main stage (default ./results)")
    p.add_argument("--seeds", type=int, default=None,
                   help="register this many seeds (default: the most any row needs, at most --max-seeds)")
    p.add_argument("--max-seeds", type=int, default=10, help="cap of the default seed count (default 10)")
    p.add_argument("--replace-design", action="store_true",
                   help="register even though another design, or main-stage runs, exist (recorded in the file)")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.extras import require_extra
    require_extra("figures", "study plan")
    from paper_figures import plan as P
    from paper_figures.tables import parse_scale_map
    from study.analysis import open_results

    if not Path(args.pilot).exists():
        raise ConfigError(f"{args.pilot} does not exist", key="--pilot")
    if not 0 < args.alpha < 1:
        raise ConfigError(f"expected 0 < alpha < 1, got {args.alpha}", key="--alpha")
    try:
        scales = parse_scale_map(args.scale_map)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--scale-map") from None
    p = P.plan(args.grid, open_results(args.pilot), scales=scales, alpha=args.alpha)
    if not p["rows"]:
        raise ConfigError(f"{args.pilot}: no claim row has a pilot pair (a ProRes run and its baseline by seed)",
                          key="--pilot")
    reg = P.register(p, args.out, seeds=args.seeds, max_seeds=args.max_seeds, replace=args.replace_design) \
        if args.register else None
    if args.json:
        if reg:
            p["registered"] = {"hash": reg["design"].hash, "seeds": reg["seeds"],
                               "seed_values": reg["seed_values"], "path": str(reg["design"].path),
                               "grid_file": str(reg["grid_file"]), "written": reg["written"]}
        print(json.dumps(p, indent=1, default=str))
        return 0
    print("\n".join(_lines(p)))
    if reg:
        print("\n".join(_registered(reg, args.out)))
    return 0


def _effect_text(r) -> str:
    from paper_figures.plan import fmt

    if r["effect"] is None:
        return "— (no paper number)"
    parts = [f"{'+' if sign > 0 else '−'} {abs(rel) * 100:.2f}% × {base:.2f}"
             for (sign, rel), base in zip(r["terms"], r["base_ppl"], strict=True)]
    return f"{fmt(r['effect'])} ({' '.join(parts).lstrip('+ ')})"


def _hours(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def _seeds(v, plannable: bool, p) -> str:
    if not plannable:
        return "—"
    return f"> {p['max_seeds']}" if v is None else str(v)


def _lines(p) -> list[str]:
    from paper_figures.plan import fmt

    pilot = p["pilot"]
    own = " (the grid's own runs: an internal pilot)" if pilot["internal"] else ""
    out = [f"plan for {p['grid_file']} from {pilot['runs']} pilot runs in {pilot['root']}{own} "
           f"(grids {', '.join(pilot['grids'])}; seeds {', '.join(map(str, pilot['seeds']))})",
           f"family: m = {p['family_size']} rows; each planned at alpha/m = {p['alpha']:g}/{p['family_size']} = "
           f"{p['row_alpha']:.4f} (Holm's first step), {p['power']:.0%} power, two-sided paired t, "
           f"at least {p['min_seeds']} seeds", "",
           "| claim | row | pilot scale | n | sd (df) | sd 80% bound | paper's effect here | seeds | seeds at bound "
           "| GPU-h (seeds) | GPU-h/seed | pilot h/run | measured h (seeds) |", "|" + "---|" * 13]
    for r in p["rows"]:
        plannable = r["effect"] is not None and r["sd"] > 0
        cells = [r["claim_id"], r["scope"], r["scale"], r["n_pilot"], f"{fmt(r['sd'])} ({r['df']})",
                 fmt(r["sd_upper_80"]), _effect_text(r), _seeds(r["seeds"], plannable, p),
                 _seeds(r["seeds_upper_80"], plannable, p),
                 _hours(r["gpu_hours"]), _hours(r["gpu_hours_per_seed"]), _hours(r["pilot_hours_per_run"]),
                 _hours(r["measured_hours"])]
        if r["error"]:
            cells[3:] = [r["error"]] + [""] * 9
        elif r["main_cells_missing"]:
            cells[9] = f"not in {p['grid']}: {'; '.join(r['main_cells_missing'])}"
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    out += ["", "paper's effect here = the paper's relative Δ at its scale (Δ / the paper's perplexity of the arm it "
                "is measured against) × the pilot's mean perplexity of that arm; the depth and spike claims print "
                "no paper number. seeds at bound: planned at the sd's 80% upper confidence bound. GPU-h: study.cost "
                "(MFU 0.40 of an H100); measured h: the pilot's hours per run × the row's runs for its seeds × main "
                "steps / pilot steps."]
    return out


def _registered(reg, root) -> list[str]:
    from study.cost import estimate
    from study.grid import load_grid

    d = reg["design"]
    hours = sum(estimate(c)["gpu_hours"] for c in load_grid(reg["grid_file"]).all_cells)
    verb = "registered" if reg["written"] else "already registered"
    return ["", f"{verb} design {d.short} of {d.grid}: {reg['seeds']} seeds "
                f"({', '.join(map(str, reg['seed_values']))}), {len(d.rows)} rows, {len(d.cells)} "
                f"cells, {hours:,.1f} GPU-hours (study.cost) -> {d.path}",
            f"run exactly the registered cells: study submit {reg['grid_file']} --out {root}   "
            f"(or study run {reg['grid_file']} --out {root})"]
