"""A token store's preparation as jobs (`study data prepare --cluster`): a job array of the units still to do,
then a finalize job that waits for it (where the backend can make a job wait: SLURM's afterok), else a finalize
here once the tasks are done. The preparation itself is study.data.store's; this module only decides what to
submit, and says what it finds.

Run it again at any time: it reads the partial store's plan, finished units and recorded jobs
(study.data.store_progress) and asks their backend where they stand before it submits anything:

    a task of the last array still queued or running    nothing is submitted: the preparation is under way
    its finalize job running                             nothing is submitted
    its finalize job queued, no task left                cancelled, and said so: a task that ended without
                                                         finishing its units left it waiting forever (SLURM:
                                                         DependencyNeverSatisfied); one whose tasks all finished
                                                         is replaced by the finalize below
    units left to do                                     a new array of those units only, and a finalize job
    no unit left                                         finalized here (a manifest from the units' records,
                                                         a rename: seconds)

Preparation jobs cannot resume from a checkpoint (their finished units are their progress): no --requeue and no
checkpoint signal; a SIGTERM (scancel, the time limit) ends a task at once (study.data.store_prepare). Their
submitit logs go to `<store>.submitit/` (or --logs), never inside `<store>.partial/`: that folder is renamed into
the store when finalized, and submitit writes the finalize job's result into its log folder after it returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from study import clusters
from study.clusters import backend
from study.data import store
from study.dispatch.submit import make_executor


def logs_folder(path: Path) -> Path:
    """The default submitit log folder of a store's preparation jobs: beside the store, not inside it."""
    return Path(f"{path}.submitit")


@dataclass
class Standing:
    """Where a partial store stands: its units and the jobs of its last submission, as their backend sees them."""

    path: Path
    units: int | None  # planned units (None: no plan recorded yet)
    todo: list[int]  # positions of the units still to do
    submission: dict | None = None  # the last one recorded (study.data.store_progress.record_jobs)
    states: dict = field(default_factory=dict)  # job id -> the backend's word for it

    def phase(self, job: str | None) -> str | None:
        return clusters.phase(self.states.get(job)) if job else None

    @property
    def live_tasks(self) -> list[str]:
        tasks = self.submission["tasks"] if self.submission else {}
        return [t for t in tasks if self.phase(t) in (clusters.QUEUED, clusters.RUNNING)]

    @property
    def finalize(self) -> str | None:
        return self.submission.get("finalize") if self.submission else None

    @property
    def lost_tasks(self) -> list[str]:
        """Tasks of the last submission that ended with some of their units undone."""
        if not self.submission:
            return []
        todo = set(self.todo)
        return [t for t, share in self.submission["tasks"].items()
                if t not in self.live_tasks and todo.intersection(share)]

    @property
    def stranded(self) -> bool:
        """The finalize job waits for tasks that ended without finishing their units: it will never start."""
        return self.phase(self.finalize) == clusters.QUEUED and not self.live_tasks and bool(self.lost_tasks)

    def job_words(self, job: str) -> str:
        return f"{job} ({self.states[job]})" if job in self.states else job


def standing(path: Path, *, scheduler: bool = True) -> Standing | None:
    """The partial store of `path` and its jobs; None when there is no partial store."""
    partial = store.partial_of(path)
    if not partial.is_dir():
        return None
    plan = store.read_plan(partial)
    todo = store.units_to_do(partial, plan, store.read_cap(partial)) if plan is not None else []
    submissions = store.read_jobs(partial)
    st = Standing(path, len(plan) if plan is not None else None, todo, submissions[-1] if submissions else None)
    kind = clusters.BACKENDS.get(st.submission["cluster"]) if st.submission else None
    if scheduler and kind is not None and kind.job_states is not None:
        ids = [*st.submission["tasks"], *([st.finalize] if st.finalize else [])]
        st.states = kind.job_states(ids)
    return st


def describe(st: Standing, hint: str = "CONFIG_OR_GRID") -> str:
    """One line: units done and to do, and the last submission's jobs (`hint`: the config or grid, for the
    command to run)."""
    if st.units is None:
        line = "partly prepared (no plan recorded yet)"
    else:
        line = f"partly prepared: {st.units - len(st.todo)} of {st.units} units done, {len(st.todo)} to do"
    if st.submission:
        live, lost = st.live_tasks, st.lost_tasks
        tasks = st.submission["tasks"]
        line += f"; {st.submission['cluster']} tasks {', '.join(st.job_words(t) for t in tasks)}"
        if st.finalize:
            line += f", finalize job {st.job_words(st.finalize)}"
        if st.stranded:
            line += (f": the finalize job is stranded (task{'s' if len(lost) > 1 else ''} {', '.join(lost)} ended "
                     f"with units undone); run `study data prepare {hint} --cluster {st.submission['cluster']}` again")
        elif not live and st.todo and st.phase(st.finalize) != clusters.RUNNING:
            line += f"; no job left: run `study data prepare {hint} --cluster {st.submission['cluster']}` again"
    return line


def submit_prepare(data_cfg, vocab_size: int, *, cluster: str, options: dict, logs: Path | None, tasks: int,
                   workers: int, max_tokens: int | None, hint: str, out=print) -> list:
    """Prepare the store of `data_cfg` as jobs of backend `cluster` (see the module's table); returns the jobs
    submitted (submitit Job objects: the array's tasks, then the finalize job if any)."""
    path = store.store_path(data_cfg, vocab_size)
    if (path / "manifest.json").exists():
        out(f"{path}: already prepared")
        return []
    kind = backend(cluster)
    # The preflight check (sbatch, a request some node can hold) before anything is written or submitted
    executor = make_executor(cluster, logs or logs_folder(path), options, name="study-data-prepare",
                             resumable=False)
    store.prepare(data_cfg, vocab_size, units=[], finalize=False, max_tokens=max_tokens)  # spec, tokenizer, plan
    st = standing(path)
    if st.live_tasks:
        out(f"{path}: being prepared ({describe(st, hint)}); nothing submitted")
        return []
    if st.phase(st.finalize) == clusters.RUNNING:
        out(f"{path}: finalize job {st.finalize} is running; nothing submitted")
        return []
    if st.phase(st.finalize) == clusters.QUEUED:
        _cancel(st, out)
    if not st.todo:
        store.prepare(data_cfg, vocab_size, units=[])
        out(f"{path}: all {st.units} units done: finalized here")
        return []
    n = max(1, min(tasks, len(st.todo)))
    shares = [st.todo[k::n] for k in range(n)]
    cfg = dataclasses.asdict(data_cfg)
    jobs = executor.map_array(store._prepare_task, [cfg] * n, [vocab_size] * n, shares, [workers] * n)
    final = None
    if kind.run_after is not None:
        kind.run_after(executor, jobs)
        executor.update_parameters(name="study-data-finalize")
        final = executor.submit(store._prepare_task, cfg, vocab_size, [], 1, True)
    partial = store.partial_of(path)
    store.record_jobs(partial, cluster=cluster, tasks={str(j.job_id): s for j, s in zip(jobs, shares, strict=True)},
                      workers=workers, finalize=str(final.job_id) if final is not None else None)
    what = f"{len(st.todo)} of {st.units} units" if len(st.todo) < st.units else f"{st.units} units"
    if final is None:
        for j in jobs:
            j.result()
        store.prepare(data_cfg, vocab_size, units=[])
        out(f"{path}: prepared by {n} {cluster} task{'s' if n > 1 else ''} ({what})")
        return jobs
    array = str(jobs[0].job_id).split("_")[0]
    out(f"{path}: submitted array job {array} ({n} task{'s' if n > 1 else ''}, {what}) and finalize job "
        f"{final.job_id} (afterok); `study data info {hint}` says when it is ready")
    return [*jobs, final]


def _cancel(st: Standing, out) -> None:
    """Cancel the last submission's queued finalize job, saying why."""
    cluster = st.submission["cluster"]
    kind = clusters.BACKENDS.get(cluster)
    if kind is None or kind.cancel is None:
        out(f"note: finalize job {st.finalize} is still queued on '{cluster}', which cannot cancel it from here")
        return
    kind.cancel([st.finalize])
    lost = st.lost_tasks
    why = (f"task{'s' if len(lost) > 1 else ''} {', '.join(st.job_words(t) for t in lost)} ended with units undone, "
           f"so it would never start" if lost else "its tasks are done; finalizing here instead")
    out(f"cancelled finalize job {st.finalize}: {why}")
