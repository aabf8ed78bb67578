"""Where a partial store stands, read from its folder alone (no source, no network): its plan of units, the units
finished so far, and the jobs submitted to prepare it.

Files of `<store>.partial/` besides the shards and the unit markers (all removed before the final rename):

    max_tokens.json   the cap the preparation was started with (its tasks and its finalize read it)
    plan.json     the units in store order, [name, index, splits] each: written by every preparation once it
                  planned, so `study data info` and a rerun of `study data prepare --cluster` count units
                  without reading the source
    jobs.json     {"submissions": [...]}: each submission of the preparation as jobs (study.dispatch.prepare):
                  its cluster, time, job-array tasks with their unit positions, workers per task and finalize job;
                  the finalize (wherever it runs) describes them in the manifest's `prepared` block
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from study import fsutil
from study.data.store_units import Unit, marker_ok, units_in_store

PLAN_FILE = "plan.json"
JOBS_FILE = "jobs.json"
CAP_FILE = "max_tokens.json"  # the cap (--max-tokens) the preparation was started with


def read_cap(partial: Path) -> int:
    """The training-token cap a partial store records (0: none)."""
    f = partial / CAP_FILE
    return json.loads(f.read_text())["max_tokens"] if f.exists() else 0


def partial_of(path: Path) -> Path:
    """The folder a store is prepared in before its final rename."""
    return Path(f"{path}.partial")


def write_plan(partial: Path, plan: list[Unit]) -> None:
    rows = [[u.name, u.index, list(u.splits)] for u in plan]
    f = partial / PLAN_FILE
    if not f.exists() or json.loads(f.read_text()) != rows:
        fsutil.atomic_write_text(f, json.dumps(rows))


def read_plan(partial: Path) -> list[Unit] | None:
    """The plan a preparation recorded (enough of each unit to find its marker and its splits), else None."""
    try:
        rows = json.loads((partial / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return [Unit(name, index, tuple(splits)) for name, index, splits in rows]


def units_to_do(partial: Path, plan: list[Unit], max_tokens: int) -> list[int]:
    """Positions in `plan` of the units a preparation still has to do: none once every unit the store will hold
    is finished (units_in_store: with a cap, the finished prefix reaches it), else every unfinished one (whoever
    does them stops at the cap, as the first submission's tasks do)."""
    markers = [marker_ok(partial, u, hashes=False) for u in plan]
    if all(markers[k] is not None for k in units_in_store(plan, markers, max_tokens)):
        return []
    return [k for k, m in enumerate(markers) if m is None]


def read_jobs(partial: Path) -> list[dict]:
    """The submissions recorded in a partial store, oldest first ([] when none)."""
    try:
        return json.loads((partial / JOBS_FILE).read_text())["submissions"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def record_jobs(partial: Path, *, cluster: str, tasks: dict[str, list[int]], workers: int,
                finalize: str | None) -> dict:
    """Add a submission to the partial store's record: `tasks` maps each array task's job id to its unit
    positions; `finalize` is the finalize job's id (None: finalized by the submitting process)."""
    entry = {"cluster": cluster, "submitted_s": round(time.time(), 3), "tasks": tasks, "workers": workers,
             "finalize": finalize}
    fsutil.atomic_write_json(partial / JOBS_FILE, {"submissions": [*read_jobs(partial), entry]})
    return entry


def jobs_prepared(submissions: list[dict], units_cpu_s: float) -> dict:
    """The manifest's `prepared` block of a store prepared by jobs: every job of every submission (array tasks
    and finalize jobs, in order), the tasks and workers per task, and the wall time from the first submission
    to now (queue waits included)."""
    jobs = [j for s in submissions for j in [*s["tasks"], *([s["finalize"]] if s.get("finalize") else [])]]
    return {"cluster": submissions[-1]["cluster"], "submissions": len(submissions), "jobs": jobs,
            "tasks": sum(len(s["tasks"]) for s in submissions),
            "workers": max(int(s["workers"]) for s in submissions),
            "seconds": round(time.time() - submissions[0]["submitted_s"], 3), "units_cpu_s": round(units_cpu_s, 3)}
