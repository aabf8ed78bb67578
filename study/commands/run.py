"""`study run GRID [--jobs N]`: run a grid's cells, skipping finished ones: one after another in this process, or
up to N at once, each in a process of its own (study/jobs.py)."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

from study import grid as grid_mod
from study.commands.eval import positive_int
from study.errors import StudyError
from study.lease import RunBusy
from study.results import FINAL_STATES, check_results_root

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run the cells of a grid locally, one after another or N at once",
                              description="Run the selected cells of a grid in this process tree. Cells whose "
                                          "status is completed or diverged are skipped; interrupted or failed "
                                          "ones resume from their latest checkpoint.")
    p.add_argument("grid", help="grid file (or a name under grids/, e.g. cpu/quickstart)")
    p.add_argument("--only", action="extend", nargs="+", default=[], metavar="RUN_ID_OR_NAME",
                   help="only these cells (run id, run-id prefix of 4+ characters, or run name)")
    p.add_argument("--where", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="only cells whose axis (label or value) or resolved config key matches")
    p.add_argument("--out", default="results", help="results root (default ./results): runs go to "
                                                     "ROOT/<grid>/<run-name>/")
    p.add_argument("--dry-run", action="store_true", help="list what would run, train nothing")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="train up to N cells at once, each in its own process with cores/N threads (default 1: "
                        "one after another in this process)")
    p.set_defaults(func=run)


def run(args) -> int:
    grid = grid_mod.load_grid(args.grid)
    cells = grid.select(args.where, args.only)
    root = check_results_root(args.out)  # before any cell: each would fail on it alone
    if not cells:
        print(f"{grid.source}: no cells selected")
        return 0
    log.info("%s: %d of %d cells -> %s/", grid.name, len(cells), len(grid.all_cells), root / grid.name)
    summary = run_cells(cells, root, dry_run=args.dry_run, jobs=args.jobs)
    return 1 if any(summary[k] for k in ("failed", "interrupted", "aborted", "not started")) else 0


def run_cells(cells, root: Path, *, dry_run: bool = False, jobs: int = 1) -> Counter:
    """Train `cells` (skipping finished ones), one after another or up to `jobs` at once; returns how many ended
    in each state."""
    summary: Counter = Counter()
    train_run = None
    parallel = []  # (index, cell, head) for study.jobs
    for i, cell in enumerate(cells, 1):
        status = cell.status(root)
        state = status.get("state")
        head = f"[{i}/{len(cells)}] {cell.run_name} ({cell.run_id})"
        if state in FINAL_STATES:
            log.info("%s: skip (%s)", head, state)
            summary[f"skipped ({state})"] += 1
            continue
        if dry_run:
            action = "would run" if not state else f"would resume ({state} at step {status.get('step', 0)})"
            print(f"{head}: {action}")  # the dry run's result: stdout
            summary["would run"] += 1
            continue
        if jobs > 1:
            parallel.append((i, cell, head))
            continue
        if train_run is None:
            from study.train import train_run  # lazily: torch and the data stack load only when training
        log.info("%s: %s", head, "run" if not state else f"resume ({state})")
        try:
            result = train_run(cell.config, root, axes=cell.axes, argv=sys.argv)
        except KeyboardInterrupt:
            raise
        except RunBusy as exc:  # another live process trains this cell: leave it to that one
            log.warning("%s: skip (busy): %s", head, exc)
            summary["skipped (busy)"] += 1
            continue
        except StudyError as exc:  # a user-facing error: one line; its status.json says failed
            log.error("%s: failed: %s", head, exc)
            summary["failed"] += 1
            continue
        except Exception as exc:  # a bug: keep its traceback, but one broken cell must not stop the others
            log.exception("%s: failed (%s: %s)", head, type(exc).__name__, exc)
            summary["failed"] += 1
            continue
        log.info("%s: %s at step %s", head, result.state, getattr(result, "step", "?"))
        summary[result.state] += 1
        if result.state == "interrupted":  # a signal asked us to stop: do not start the next cell
            log.warning("interrupted: not starting further cells (run the same command again to resume)")
            break
    if parallel:
        from study.jobs import run_parallel
        summary.update(run_parallel(parallel, root, jobs))
    print("summary: " + ", ".join(f"{n} {state}" for state, n in sorted(summary.items())))
    return summary
