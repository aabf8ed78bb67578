"""`study quickstart`: the README's main job on the embedded default, end to end on CPU.

Trains the cells of grids/cpu/quickstart.yaml (tiny model, bundled corpus; finished cells are skipped, so a second
call only redraws), evaluates each finished run through lm-eval on the local corpus tasks, collects the results
store and draws every figure and table the runs allow. Prints a results table and where everything is.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_GRID = Path("grids/cpu/quickstart.yaml")


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="train, evaluate and plot the CPU quickstart grid (the README's main job)")
    p.add_argument("--grid", default=str(DEFAULT_GRID), help=f"grid to run (default {DEFAULT_GRID})")
    p.add_argument("--out", default="results", help="results root (default ./results)")
    p.add_argument("--tasks", default="local", help="lm-eval tasks after training (default: the local corpus tasks)")
    p.add_argument("--limit", type=int, default=100,
                   help="examples per lm-eval task (default 100: minutes, not tens of minutes, on 2 cores)")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.extras import require_extra
    require_extra("eval", "study quickstart")  # fail before training, not after
    require_extra("figures", "study quickstart")
    import paper_figures
    from study.collect import collect
    from study.commands.run import run_cells
    from study.commands.train import EXIT_INTERRUPTED
    from study.errors import StudyError
    from study.evaluate.run import evaluate_run
    from study.grid import load_grid

    grid_path = Path(args.grid)
    if not grid_path.exists():
        raise StudyError(f"{grid_path} not found: run the quickstart from the repository root, or pass --grid")
    grid = load_grid(grid_path)
    root = Path(args.out)
    log.info("training %d cells of %s into %s/", len(grid.all_cells), grid.name, root / grid.name)
    summary = run_cells(grid.all_cells, root)
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    finished = [cell.run_dir(root) for cell in grid.all_cells if cell.status(root).get("state") == "completed"]

    log.info("lm-eval (%s, %d examples per task) on %d runs", args.tasks, args.limit, len(finished))
    for run_dir in finished:
        if (Path(run_dir) / "lm_eval.json").exists():
            continue
        evaluate_run(run_dir, tasks=args.tasks, limit=args.limit, ppl=False, allow_hub=False)

    log.info("collecting and drawing")
    col = collect(root / grid.name)
    col.save(root / grid.name / "collected.parquet")
    figures = root / grid.name / "figures"
    report = paper_figures.make_all(col, figures)
    print(report.summary())
    print()
    print(_results_table(col))
    print(f"\nfigures and tables: {figures}/ (index.md lists them)")
    print_verdicts(col)
    return 1 if report.failed else 0


def print_verdicts(col) -> None:
    """The answer in words: one line per ProRes-vs-baseline row of the claims table (a row per setting of the
    grid's design), ours with its spread over seeds and its Holm-corrected verdict, next to the paper's number."""
    from paper_figures.claims import verdict_lines

    lines = verdict_lines(col)
    if lines:
        print("\n" + "\n".join(lines))


def _results_table(col) -> str:
    """Final held-out perplexity and lm-eval scores, one row per run."""
    runs = col.runs.set_index("run_id")
    lines = ["| run | state | steps | held-out ppl | lm-eval |", "|---|---|---|---|---|"]
    scores = {}
    if len(col.lm_eval):
        for rid, grp in col.lm_eval.groupby("run_id"):
            picked = grp[grp["metric"].isin(["acc", "word_perplexity"])]
            scores[rid] = ", ".join(f"{r.task} {r.metric} {r.value:.3g}" for r in picked.itertuples())
    for rid, row in runs.iterrows():
        ppl = row.get("final_eval_ppl")
        ppl = f"{ppl:.2f}" if isinstance(ppl, float) and ppl == ppl else "—"
        lines.append(f"| {row['run_name']} | {row['state']} | {row.get('step', '')} | {ppl} | {scores.get(rid, '')} |")
    return "\n".join(lines)
