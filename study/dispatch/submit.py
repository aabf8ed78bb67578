"""Submission: the cells that need a run, as one submitit batch (a SLURM job array), and its record.

`submit_grid` plans (study.dispatch.select), prints what it will do, submits one TrainCell per cell through one
`executor.batch()`, records each job id in the run's status.json and the whole submission under
<root>/<grid>/.submissions/<stamp>.json. A refused submission leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from study.data.store import StoreError, check_ready
from study.dispatch.job import TrainCell
from study.dispatch.options import DEFAULTS, check_cluster, executor_parameters, option_warnings
from study.dispatch.select import Decision, plan_cells
from study.errors import ConfigError, StudyError
from study.results import RunDir, check_results_root, write_json_atomic
from study.status import GridLike
from study.timeutil import file_stamp, now


class SubmitError(StudyError):
    """Submission failed (sbatch refused, no executor): nothing or only part was submitted."""


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


def make_executor(cluster: str, logs: str | Path, options: dict, *, name: str) -> submitit.AutoExecutor:
    """An AutoExecutor for `cluster` with the options applied. `cluster` must be given: AutoExecutor would pick
    SLURM whenever `srun` exists, even with no daemon running."""
    check_cluster(cluster)
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise SubmitError("--cluster slurm: no `sbatch` on this machine (use --cluster local or debug)")
    if cluster == "local" and int(options.get("nodes") or 1) > 1:
        raise ConfigError("the local executor runs on one node; use --nodes 1", key="--nodes")
    timeouts = int(options.get("max_num_timeout") or DEFAULTS["max_num_timeout"])
    executor = submitit.AutoExecutor(folder=str(logs), cluster=cluster, slurm_max_num_timeout=timeouts,
                                     local_max_num_timeout=timeouts)
    executor.update_parameters(**executor_parameters(options, name=name))
    if cluster == "local" and options.get("signal_delay_s") is not None:
        # LocalExecutor reads it (USR2 that many seconds before timeout) but AutoExecutor does not forward it.
        executor._executor.parameters["signal_delay_s"] = int(options["signal_delay_s"])
    if cluster == "local" and options.get("gpus_per_node"):
        executor._executor.parameters["visible_gpus"] = _local_gpus(int(options["gpus_per_node"]))
    return executor


def _local_gpus(wanted: int) -> list[int]:
    """The GPUs of this machine a local job may use: the executor hands a job the first `wanted` of them (its
    tasks then take one each by local rank), numbered as CUDA numbers them for this process: the entries of
    CUDA_VISIBLE_DEVICES when it lists GPU indices (CUDA's own variable, read to pass it on, not configuration),
    else 0..n-1."""
    import torch

    have = torch.cuda.device_count()
    if wanted > have:
        raise ConfigError(f"--gpus-per-node {wanted} but this machine shows {have} GPU(s) to this process",
                          key="--gpus-per-node")
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return [int(d) for d in visible] if visible and all(d.isdigit() for d in visible) else list(range(have))


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


def submit_grid(grid: GridLike, *, root, cluster: str, options: dict, cells=None, where=(), only=(), logs=None,
                dry_run: bool = False, rerun_failed: bool = False, argv: list[str] | None = None,
                scheduler: bool = True, out=print) -> SubmitReport:
    """Select the cells needing a run and submit them as one job array. Prints what it does through `out`."""
    root = check_results_root(root).resolve()
    check_cluster(cluster)
    if cells is None:
        cells = grid.select(where, only)
    decisions = plan_cells(cells, root, grid=grid, rerun_failed=rerun_failed, scheduler=scheduler)
    report = SubmitReport(decisions)
    todo = report.submitted
    logs = Path(logs) if logs else root / grid.name / ".submitit" / "%j"
    params = executor_parameters(options, name=grid.name)

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
        f"{'job array' if cluster == 'slurm' and len(todo) > 1 else 'submission'}: "
        + ", ".join(f"{k}={v}" for k, v in shown.items()) + f"; logs {logs}")
    for warning in option_warnings(options):
        out(warning)
    if cluster == "local" and len(todo) > 1:
        if options.get("gpus_per_node"):  # each job would get the same first GPUs of the machine
            raise ConfigError(f"--cluster local starts all {len(todo)} runs at once and each would train on the "
                              f"same {options['gpus_per_node']} GPU(s); submit one run at a time (--only NAME)",
                              key="--cluster")
        out(f"note: the local executor starts all {len(todo)} runs at once (array parallelism is a SLURM setting); "
            f"`study run` trains them one after another")
    if dry_run:
        return report
    # Compute nodes read a prepared token store (offline): every store the submitted cells need must be ready.
    missing = check_ready([d.cell for d in todo])
    if missing:
        raise StoreError(f"{len(missing)} token store(s) of the cells to submit not ready ({missing[0][1]}); prepare "
                         f"them first with: study data prepare {getattr(grid, 'path', None) or grid.name} --workers N")

    executor = make_executor(cluster, logs, options, name=grid.name)
    fns = [TrainCell(d.cell.config_dict, str(root), d.cell.axes, argv) for d in todo]
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
    if cluster == "slurm" and all("_" in str(j.job_id) for j in jobs):
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
    if cluster == "debug":  # submitit's debug executor runs jobs in this process, when asked for their result
        for d, job in zip(todo, jobs, strict=True):
            try:
                state = _run_debug_job(job)
            except Exception as exc:
                state = "failed"
                out(f"{d.cell.run_name}: failed: {type(exc).__name__}: {exc}")
            report.results[d.cell.run_id] = state
            out(f"{d.cell.run_name}: {state}")
    return report
