"""Submission: the cells that need a run, as one submitit batch (a SLURM job array), and its record.

`submit_grid` plans (study.dispatch.select), prints what it will do, submits one TrainCell per cell through one
`executor.batch()`, records each job id in the run's status.json and the whole submission under
<root>/<grid>/.submissions/<stamp>.json. A refused submission leaves nothing behind.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from study.clusters import backend
from study.clusters.options import executor_parameters, option_warnings
from study.data.store import StoreError, check_ready, partial_of
from study.dispatch.job import TrainCell
from study.dispatch.select import Decision, plan_cells
from study.errors import StudyError, SubmitError
from study.results import RunDir, check_results_root, write_json_atomic
from study.status import GridLike
from study.timeutil import file_stamp, now


def _new_files(folder: Path, before: set) -> list[Path]:
    return [p for p in folder.rglob("*") if p not in before] if folder.is_dir() else []


def _fixed_part(logs: Path) -> Path:
    """The part of a log-folder pattern before its first %-placeholder (submitit fills %j, %A, ...)."""
    parts = []
    for part in logs.parts:
        if "%" in part:
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def make_executor(cluster: str, logs: str | Path, options: dict, *, name: str, resumable: bool = True):
    """The submitit executor of backend `cluster` (study.clusters) with the resolved options applied, after its
    preflight check. `cluster` must be given: AutoExecutor would pick SLURM whenever `srun` exists, even with no
    daemon running. `resumable` False: its jobs cannot resume from a checkpoint, so they get no checkpoint signal
    (and the caller asks for no requeue)."""
    kind = backend(cluster)
    kind.check(options)
    executor = kind.executor(Path(logs), options)
    executor.update_parameters(**executor_parameters(options, name=name))
    if not resumable and kind.no_checkpoint_signal is not None:
        kind.no_checkpoint_signal(executor)
    return executor


@dataclass
class SubmitReport:
    decisions: list[Decision]
    jobs: dict = field(default_factory=dict)  # run_id -> job id
    array_job_id: str | None = None
    record: Path | None = None
    results: dict = field(default_factory=dict)  # run_id -> final state (debug executor only)
    job_objects: list = field(default_factory=list)  # submitit Job objects (this process only)

    @property
    def submitted(self) -> list[Decision]:
        return [d for d in self.decisions if d.submit]


def mark_submitted(run_dir: Path, job_id: str, cluster: str) -> None:
    """status.json gets the job id; a run with no richer state reads 'queued' (never clobbers running/failed/...)."""
    RunDir(run_dir).record_job(str(job_id), cluster, submitted=now())


def _run_debug_job(job) -> str:
    """Run a debug-executor job in this process without submitit's pdb-on-error (DebugJob.results)."""
    backup = dict(os.environ)
    os.environ.update(job.environ)
    try:
        return job.submission().result()
    finally:
        os.environ.clear()
        os.environ.update(backup)


def _stores_problem(todo: list[Decision], grid: GridLike, cluster: str) -> str | None:
    """Why the token stores the cells to submit need are not ready (compute nodes read a prepared store,
    offline), with both ways to prepare them; None when they are ready."""
    missing = check_ready([d.cell for d in todo])
    if not missing:
        return None
    path, problem = missing[0]
    target = getattr(grid, "path", None) or grid.name
    if (path / "manifest.json").exists():  # damaged, or cut short: its own message says what to do
        return f"{len(missing)} token store(s) of the runs to submit not ready: {problem}"
    state = "only partly prepared" if partial_of(path).exists() else "not prepared"
    return (f"token store {path} of the runs to submit is {state}"
            + (f" ({len(missing)} stores in all)" if len(missing) > 1 else "")
            + f"; prepare it first, here: `study data prepare {target} --workers N`, or as jobs: "
              f"`study data prepare {target} --cluster {cluster}`")


def submit_grid(grid: GridLike, *, root, cluster: str, options: dict, cells=None, where=(), only=(), logs=None,
                dry_run: bool = False, rerun_failed: bool = False, argv: list[str] | None = None,
                scheduler: bool = True, notes: list[str] = (), out=print) -> SubmitReport:
    """Select the cells needing a run and submit them as one job array. Prints what it does through `out`
    (`notes`: the caller's lines, printed with the options' warnings). A submission that cannot go ahead (a token
    store not ready, a request no node can hold) is refused before anything is printed."""
    root = check_results_root(root).resolve()
    kind = backend(cluster)
    if cells is None:
        cells = grid.select(where, only)
    decisions = plan_cells(cells, root, grid=grid, rerun_failed=rerun_failed, scheduler=scheduler)
    report = SubmitReport(decisions)
    todo = report.submitted
    logs = Path(logs) if logs else root / grid.name / ".submitit" / "%j"
    params = executor_parameters(options, name=grid.name)
    stores = _stores_problem(todo, grid, cluster) if todo else None
    executor = None
    if todo and not dry_run:
        if stores:
            raise StoreError(stores)
        executor = make_executor(cluster, logs, options, name=grid.name)  # the backend's preflight check

    width = max([len(d.run.run_name) for d in decisions] + [3])
    for d in decisions:
        out(f"{d.action:6s}  {d.run.run_name:<{width}}  {d.reason}")
    verb = "would submit" if dry_run else "submitting"
    out(f"{grid.name}: {len(decisions)} cells selected, {len(todo)} to submit, "
        f"{len(decisions) - len(todo)} skipped")
    if not todo:
        out("nothing to submit (0 new jobs)")
        return report
    shown = {k: v for k, v in params.items() if k != "name"}
    out(f"{verb} {len(todo)} run(s) to cluster '{cluster}' as one "
        f"{'job array' if kind.array and len(todo) > 1 else 'submission'}: "
        + ", ".join(f"{k}={v}" for k, v in shown.items()) + f"; logs {logs}")
    for line in [*notes, *option_warnings(options), *kind.notes(options, len(todo))]:
        out(line)
    if dry_run:
        if stores:
            out(f"note: {stores}")
        return report
    fns = [TrainCell(d.cell.config_dict, str(root), d.cell.axes, argv, cluster) for d in todo]
    log_base = _fixed_part(Path(logs))
    before = set(log_base.rglob("*")) if log_base.is_dir() else set()
    try:
        with executor.batch():
            jobs = [executor.submit(fn) for fn in fns]
    except BaseException as exc:
        # Nothing was submitted: the pickled submissions and scripts written for it must not linger.
        for path in sorted(_new_files(log_base, before), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            elif not path.is_dir():
                path.unlink(missing_ok=True)
        if isinstance(exc, StudyError) or not isinstance(exc, Exception):
            raise
        msg = " ".join(str(exc).split())  # sbatch refused (bad partition, ...): say so in one line
        raise SubmitError(f"submission to '{cluster}' failed: {msg[:500]}; nothing was submitted") from exc
    report.job_objects = jobs
    for d, job in zip(todo, jobs, strict=True):
        report.jobs[d.cell.run_id] = str(job.job_id)
        mark_submitted(Path(d.run.run_dir), str(job.job_id), cluster)
    if kind.array and all("_" in str(j.job_id) for j in jobs):
        mains = sorted({str(j.job_id).split("_")[0] for j in jobs})
        report.array_job_id = mains[0] if len(mains) == 1 else None
    record_dir = root / grid.name / ".submissions"
    record_dir.mkdir(parents=True, exist_ok=True)
    report.record = record_dir / f"{file_stamp()}.json"
    write_json_atomic(report.record, {
        "grid": grid.name, "grid_file": str(getattr(grid, "path", "")), "cluster": cluster,
        "submitted": now(),
        "argv": list(sys.argv if argv is None else argv), "root": str(root), "logs": str(logs),
        "parameters": params, "options": {k: v for k, v in options.items() if k != "sources"},
        "array_job_id": report.array_job_id,
        "jobs": dict(report.jobs),
        "runs": {d.cell.run_id: d.cell.run_name for d in todo},
        "skipped": {d.cell.run_id: d.reason for d in decisions if not d.submit},
    })
    ids = ", ".join(report.jobs.values())
    out(f"submitted {len(jobs)} job(s){f' as array {report.array_job_id}' if report.array_job_id else ''}: {ids}")
    out(f"record: {report.record}")
    if kind.in_process:  # its jobs run in this process, when asked for their result
        for d, job in zip(todo, jobs, strict=True):
            try:
                state = _run_debug_job(job)
            except Exception as exc:
                state = "failed"
                out(f"{d.cell.run_name}: failed: {type(exc).__name__}: {exc}")
            report.results[d.cell.run_id] = state
            out(f"{d.cell.run_name}: {state}")
    return report
