"""Which cells of a grid to submit, and why (`decide`; the table of study.dispatch's docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from study.status import CellLike, GridLike, RunState, grid_status


@dataclass
class Decision:
    cell: CellLike
    run: RunState
    submit: bool
    reason: str

    @property
    def action(self) -> str:
        return "submit" if self.submit else "skip"


def decide(run: RunState, *, rerun_failed: bool = False) -> tuple[bool, str]:
    """(submit?, reason) for one run (the table in study.dispatch's docstring)."""
    s = run.state
    if s == "completed":
        return False, f"completed at step {run.step}"
    if s == "diverged":
        return False, f"diverged at step {run.diverged_step or run.step} (a result)"
    if s in ("queued", "running"):
        if run.job_state is not None and run.live:
            return False, f"{s} as job {run.job_id} ({run.job_state})"
        if s == "running" and run.owner:  # its owner's lease is alive (study run, or a job we cannot query)
            return False, f"running ({run.owner}); never trained twice"
        if rerun_failed:
            return True, f"recorded '{s}' but no live job confirmed (--rerun-failed)"
        job = f"job {run.job_id}" if run.job_id else "no job id"
        return False, (f"recorded '{s}' ({job}) and not confirmed dead by a scheduler; pass --rerun-failed to "
                       f"resubmit")
    if s == "failed":
        if rerun_failed:
            return True, "failed; rerun (--rerun-failed), resuming from its latest checkpoint if any"
        err = f": {str(run.error).splitlines()[0][:80]}" if run.error else ""
        return False, f"failed{err}; pass --rerun-failed to resubmit"
    if s == "interrupted":
        if run.live:  # its owner died but its job lives: the job resumes it, never a second one
            return False, f"interrupted, but its job {run.job_id} is still {run.job_state}: never submitted twice"
        return True, f"interrupted at step {run.step}: resumes from its checkpoint"
    return True, "new" if run.recorded is None else f"{run.recorded}, no job"


def plan_cells(cells: list[CellLike], root, *, grid: GridLike | None = None, rerun_failed: bool = False,
               scheduler: bool = True) -> list[Decision]:
    """A Decision for each cell, from its run directory refined by the scheduler (study.status.grid_status)."""
    cells = list(cells)
    runs = grid_status(grid, root, cells=cells, scheduler=scheduler)
    out = []
    for cell, run in zip(cells, runs, strict=True):
        go, reason = decide(run, rerun_failed=rerun_failed)
        out.append(Decision(cell, run, go, reason))
    return out
