"""`study status GRID [--out ROOT] [--json]`: per cell pending/queued/running/completed/diverged/failed/interrupted,
with step, last loss and job id (status.json, refined by sacct/squeue where a job is recorded), and a summary."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("status", help="state, step, last loss and job of every cell of a grid")
    p.add_argument("grid", help="grid file (or a name under grids/)")
    p.add_argument("--out", default="results", help="results root (default: ./results)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="only cells matching")
    p.add_argument("--only", action="append", default=[], metavar="ID_OR_NAME", help="only these run ids / names")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-scheduler", action="store_true", help="read status files only (no sacct/squeue)")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.grid import load_grid
    from study.status import format_table, grid_status, summarize, summary_line

    grid = load_grid(args.grid)
    runs = grid_status(grid, args.out, where=args.where, only=args.only, scheduler=not args.no_scheduler)
    if args.json:
        print(json.dumps({"grid": grid.name, "root": str(args.out), "runs": [r.to_dict() for r in runs],
                          "summary": summarize(runs)}, indent=1, default=str))
        return 0
    print(format_table(runs))
    print(summary_line(runs))
    return 0
