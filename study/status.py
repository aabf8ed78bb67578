"""Where each run of a grid stands: read from its run directory, refined by the scheduler when a job is recorded.

Pure reading (no torch, no submitit at import). The states are those of study.results.STATES:

    pending      no run directory / no status yet (never submitted, or submitted before any job recorded it)
    queued       a job is recorded and the scheduler says it waits (PENDING, REQUEUED, ...)
    running      the trainer says so, its owner (study.lease) is alive and (where the scheduler can be asked) its
                 job is alive
    completed    finished; a result, never rerun
    diverged     NaN/inf or loss above threshold, with its step; a result, never rerun
    failed       the trainer recorded an error (an exception, a full disk, ...): resubmitted only with
                 --rerun-failed
    interrupted  stopped by SIGTERM/SIGUSR2/Ctrl-C with a checkpoint, or its owner is gone without recording an
                 error (SIGKILL, OOM kill, node failure: the lease went stale or names a dead process, or the
                 recorded job ended while the run said 'running'; also while that job still runs, since the
                 trainer that wrote 'running' is gone); resumes from its latest checkpoint when run or submitted
                 again
    A recorded job that ended while the run still said pending/queued (cancelled in the queue) reads 'pending'.

`read_run_state(run_dir)` reads the files; `job_states(runs)` asks each recorded job's backend (study.clusters:
squeue then sacct on SLURM; for the local executor whether the controller process lives); `effective_state`
combines the two through the backends' phases (queued, running, ended);
`grid_status(grid, root)` does all of it for the cells of a grid and is what `study status` and `study submit`
use.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from study import clusters
from study import lease as lease_mod
from study.results import FINAL_STATES, STATES, read_json

# A recorded job without job_cluster was SLURM's: status.json had no job_cluster while `study submit` knew only SLURM.
UNRECORDED_CLUSTER = "slurm"


@dataclass
class RunState:
    """One cell's standing. `state` is the effective state; `recorded` what status.json says."""

    run_name: str
    run_dir: str
    state: str
    recorded: str | None = None
    step: int | None = None  # the last logged step (metrics.jsonl), else status.json's
    steps: int | None = None  # the run's planned total (config.yaml), when known
    checkpoint_step: int | None = None  # the last checkpoint's step: where a resumed run restarts
    loss: float | None = None
    job_id: str | None = None
    job_cluster: str | None = None
    job_state: str | None = None  # scheduler's word for the job, when asked
    error: str | None = None
    diverged_step: int | None = None
    updated: str | None = None
    owner: str | None = None  # the live owner of a running run (host, pid, SLURM job, heartbeat)
    owner_gone: str | None = None  # why the owner of a run recorded 'running' is known to be gone
    run_id: str | None = None
    axes: dict = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """A job for this run is queued or running right now (never submit it again), whatever the run's own
        files say (a job whose trainer died may still be restarting it)."""
        return self.state not in FINAL_STATES and self.job_id is not None and self.job_state is not None \
            and _job_alive(self.job_state)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------
def last_jsonl_row(path: Path, *, chunk: int = 65536) -> dict | None:
    """The last complete JSON row of a JSONL file, reading only its tail (metrics files grow long)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chunk))
            tail = fh.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return None
    lines = tail.splitlines()
    if size > chunk and lines:
        lines = lines[1:]  # the first line of the window may be cut
    for line in reversed(lines):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if isinstance(row, dict):
            return row
    return None


def _planned_steps(run_dir: Path) -> int | None:
    try:
        text = (run_dir / "config.yaml").read_text()
    except OSError:
        return None
    m = re.search(r"^train:\s*\n(?:[ \t]+.*\n)*?[ \t]+steps:\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def _as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_run_state(run_dir: str | Path) -> RunState:
    """The run's state as its files record it (no scheduler query). A missing directory reads 'pending'."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / "status.json", {}) or {}
    recorded = status.get("state")
    state = recorded if recorded in STATES else "pending"
    last = last_jsonl_row(run_dir / "metrics.jsonl")
    step = last.get("step") if last is not None and isinstance(last.get("step"), int) else status.get("step")
    job = status.get("job_id")
    error, owner, gone = status.get("error"), None, None
    if recorded == "running":  # is anyone still training it? (SIGKILL, OOM and node failures write nothing)
        lease = lease_mod.read(run_dir)
        gone = lease_mod.owner_gone(lease)
        if gone is None:
            owner = lease_mod.describe(lease)
        else:
            state, error = "interrupted", f"owner gone ({gone}); resumes from its last checkpoint"
    ckpt = status.get("checkpoint_step")
    return RunState(
        run_name=run_dir.name, run_dir=str(run_dir), state=state, recorded=recorded, step=step,
        steps=_planned_steps(run_dir), checkpoint_step=ckpt if isinstance(ckpt, int) else None,
        loss=_as_float(last.get("loss")) if last else None,
        job_id=str(job) if job not in (None, "") else None, job_cluster=status.get("job_cluster"),
        error=error, diverged_step=status.get("diverged_step"), updated=status.get("updated"), owner=owner,
        owner_gone=gone,
    )


# ---------------------------------------------------------------------------------------------------
# Scheduler
# ---------------------------------------------------------------------------------------------------
def _job_alive(job_state: str) -> bool:
    return clusters.phase(job_state) in (clusters.QUEUED, clusters.RUNNING)


def job_states(runs: list[RunState], *, scheduler: bool = True) -> dict[str, str]:
    """{job_id: state word} for the runs' recorded jobs, each asked of its own backend's reader."""
    if not scheduler:
        return {}
    by_cluster: dict[str, list[str]] = {}
    for r in runs:
        if r.job_id:
            by_cluster.setdefault(r.job_cluster or UNRECORDED_CLUSTER, []).append(r.job_id)
    out: dict[str, str] = {}
    for name, ids in by_cluster.items():
        kind = clusters.BACKENDS.get(name)
        if kind is not None and kind.job_states is not None:
            out.update(kind.job_states(ids))
    return out


def effective_state(recorded: str | None, job_state: str | None) -> tuple[str, str | None]:
    """(state, error) from status.json's state and the scheduler's state of the recorded job.

    Final results (completed, diverged) stand whatever the scheduler says. A live job makes the run queued or
    running (also over 'interrupted' or 'failed': it was resubmitted). A job that ended while the run still said
    running means its trainer died without recording an error (OOM kill, node failure, scancel): interrupted,
    resumed by the next submit; one that ended while the run said pending/queued never started it: pending.
    Only errors the trainer recorded itself read 'failed'.
    """
    state = recorded if recorded in STATES else "pending"
    if state in FINAL_STATES or not job_state or job_state == clusters.UNKNOWN:
        return state, None
    s, phase = job_state.split()[0], clusters.phase(job_state)
    if phase == clusters.RUNNING:
        # The trainer writes 'running' itself once it starts; before that the job is starting up.
        return ("running" if state in ("running", "queued", "pending", "interrupted", "failed") else state), None
    if phase == clusters.QUEUED:
        return "queued", None
    if state in ("pending", "queued", "running") and phase == clusters.ENDED:
        if recorded == "running":
            return "interrupted", f"job ended ({s}) without the trainer recording an error; resumes"
        return "pending", f"job ended ({s}) before the run started"
    return state, None


def refine(run: RunState, job_state: str | None) -> RunState:
    run.job_state = job_state
    if not job_state or job_state == clusters.UNKNOWN:
        return run  # the files and the owner's lease (read_run_state) say all there is
    state, error = effective_state(run.recorded, job_state)
    if state == "running" and run.recorded == "running" and run.owner_gone:
        # The job lives on but the trainer that wrote 'running' is gone (killed during its final save, one rank
        # of several dead, a requeued job not yet restarted): nothing trains it now.
        state, error = "interrupted", (f"owner gone ({run.owner_gone}) while its job {run.job_id} is still "
                                       f"{job_state}; resumes when the job restarts it, or after it ends")
    run.state = state
    if error:
        run.error = error
    return run


# ---------------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------------
class CellLike(Protocol):
    """What status and dispatch need of a grid cell (study.grid.Cell is one): its identity, config and folder."""

    run_id: str
    run_name: str
    axes: dict
    config: Any  # the resolved study.config.RunConfig

    @property
    def config_dict(self) -> dict: ...

    def run_dir(self, root) -> Path: ...


class GridLike(Protocol):
    """What status and dispatch need of a grid (study.grid.Grid is one): its name and cell selection."""

    name: str

    def select(self, where=(), only=()) -> list[CellLike]: ...


def grid_status(grid: GridLike | None, root, *, cells: list[CellLike] | None = None, where=(), only=(),
                scheduler: bool = True) -> list[RunState]:
    """RunState of each selected cell of `grid` (a study.grid.Grid), refined by the scheduler where possible."""
    if cells is None:
        cells = grid.select(where, only)
    runs = []
    for cell in cells:
        run = read_run_state(Path(cell.run_dir(root)))
        run.run_id, run.axes = cell.run_id, dict(cell.axes)
        run.run_name = cell.run_name
        if run.steps is None:
            run.steps = cell.config.train.steps
        runs.append(run)
    states = job_states(runs, scheduler=scheduler)
    for run in runs:
        refine(run, states.get(run.job_id) if run.job_id else None)
    return runs


def summarize(runs: list[RunState]) -> dict[str, int]:
    counts = {s: 0 for s in STATES}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {k: v for k, v in counts.items() if v}


def summary_line(runs: list[RunState]) -> str:
    counts = summarize(runs)
    parts = [f"{n} {s}" for s, n in counts.items()]
    return f"{len(runs)} runs: " + (", ".join(parts) if parts else "none")


def format_table(runs: list[RunState]) -> str:
    header = ("RUN", "STATE", "STEP", "CKPT", "LOSS", "JOB", "NOTE")
    rows = []
    for r in runs:
        step = "-" if r.step is None else (f"{r.step}/{r.steps}" if r.steps else str(r.step))
        ckpt = "-" if r.checkpoint_step is None else str(r.checkpoint_step)
        loss = "-" if r.loss is None else f"{r.loss:.4f}"
        job = r.job_id or "-"
        if r.job_state:
            job += f" ({r.job_state})"
        note = ""
        if r.state == "diverged" and r.diverged_step is not None:
            note = f"diverged at step {r.diverged_step}"
        elif r.state in ("failed", "interrupted", "pending") and r.error:
            note = str(r.error).splitlines()[0][:100]
        elif r.state == "running" and r.owner:
            note = r.owner
        rows.append((r.run_name, r.state, step, ckpt, loss, job, note))
    if rows:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    else:
        widths = [len(h) for h in header]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]
    return "\n".join(lines)
