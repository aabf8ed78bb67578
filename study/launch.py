"""submitit dispatch: the cells of a grid that still need running, as one job array, resumable on preemption.

    plan = plan_cells(cells, root, rerun_failed=False)        # what to submit, what to skip and why
    report = submit_grid(grid, root=..., cluster="slurm", options=resolve_options(cli, profile, grid.cluster))

Selection (`decide`), from the run's status.json refined by the scheduler (study.status):
    completed, diverged       skipped: a result (divergence is a result, never retried)
    queued / running          skipped when the recorded job is alive (sacct/squeue, or the local controller's
                              pid); never duplicated. Recorded but unconfirmable (no job id, no scheduler answer):
                              skipped too, unless --rerun-failed
    failed                    only with --rerun-failed (it resumes from its latest checkpoint if it has one)
    interrupted               resubmitted: it stopped cleanly with a checkpoint (SIGTERM/SIGUSR2, timeout or
                              preemption without requeue) and resumes; that is continuing, not rerunning a failure
    pending                   submitted
    A recorded job that ended (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...) while the run still
    said pending/queued/running reads 'failed' (study.status.effective_state).

One `AutoExecutor(folder=logs, cluster=...)` and one `executor.batch()` per submission: on SLURM one job array
(`slurm_array_parallelism` running at once); one task per GPU (`tasks_per_node = gpus_per_node`, or
--tasks-per-node for CPU processes), the process group set up inside the job from
`submitit.helpers.TorchDistributedEnvironment` (gloo on CPU, nccl on GPU; never torchrun).

Preemption and timeouts (the signal interplay, from submitit/core/submission.py and job_environment.py):
submitit's `process_job` installs its handlers *before* calling our callable: SIGUSR2 ->
`SignalHandler.checkpoint_and_try_requeue` (rank 0: call `callable.checkpoint()`, dump the returned
DelayedSubmission over the job's pickle, `scontrol requeue <job>` or exit code 144 on the local executor, then
`sys.exit(-1)`; other ranks return), SIGTERM/SIGCONT -> logged and ignored. SLURM sends SIGUSR2 `signal_delay_s`
(90) seconds before the time limit (`--signal=USR2@90`, to the job steps), and `job._interrupt()` sends SIGTERM
then SIGUSR2. If that handler ran while the trainer was mid-step, the job would be requeued without saving.
So `TrainCell.__call__` lets `train_run` replace both handlers for its duration (they only set a StopFlag), the
trainer saves a checkpoint at the next step boundary, writes state 'interrupted' and returns; then, if SIGUSR2
was among the signals received, rank 0 calls the submitit handler it found installed at entry, which calls
`TrainCell.checkpoint()` -> `DelayedSubmission(TrainCell(same config, root, axes))`: a fresh callable holding no
checkpoint path, which resumes from the newest valid checkpoint on disk when the requeued job starts. A SIGTERM
alone (scancel, node shutdown, SLURM's own preemption requeue) saves and ends without requeueing; the run reads
'interrupted' and the next `study submit` resumes it. The trainer restores submitit's handlers when it returns,
so a SIGUSR2 that arrives after it returned goes straight to submitit (the checkpoint is already on disk).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from study.errors import ConfigError, StudyError
from study.results import FINAL_STATES, RunDir, write_json_atomic
from study.status import RunState, grid_status

CLUSTERS = ("slurm", "local", "debug")

# Cluster options: CLI flags, profile keys and the grid's `cluster:` section all use these names.
OPTION_TYPES: dict[str, type] = {
    "cluster": str,
    "partition": str,
    "account": str,
    "qos": str,
    "constraint": str,
    "nodes": int,
    "gpus_per_node": int,
    "tasks_per_node": int,
    "cpus_per_task": int,
    "mem_gb": float,
    "time": int,  # minutes
    "array_parallelism": int,
    "max_num_timeout": int,
    "signal_delay_s": int,
    "setup": list,  # shell lines run in the job script before the task starts (module load ...)
    "additional": dict,  # extra sbatch flags: {"mail-type": "END"}
    "logs": str,
}
OPTION_ALIASES = {"timeout_min": "time", "time_min": "time", "gpus": "gpus_per_node", "mem": "mem_gb",
                  "array_parallel": "array_parallelism", "parallelism": "array_parallelism",
                  "ntasks_per_node": "tasks_per_node", "additional_parameters": "additional",
                  "slurm_additional_parameters": "additional"}
DEFAULTS = {"nodes": 1, "time": 1440, "array_parallelism": 256, "max_num_timeout": 50}


class SubmitError(StudyError):
    """Submission failed (sbatch refused, no executor): nothing or only part was submitted."""


# ---------------------------------------------------------------------------------------------------
# Options: CLI > profile > grid
# ---------------------------------------------------------------------------------------------------
def _norm_option_key(key: str) -> str:
    k = str(key).strip().replace("-", "_")
    if k.startswith("slurm_") and k[len("slurm_"):] in OPTION_TYPES:
        k = k[len("slurm_"):]
    return OPTION_ALIASES.get(k, k)


def check_options(raw: dict | None, *, source: str) -> dict:
    """Validate one source of cluster options (profile file or grid `cluster:` section); normalise keys."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of cluster options, got {raw!r}", source=source)
    out = {}
    for key, value in raw.items():
        k = _norm_option_key(key)
        if k not in OPTION_TYPES:
            raise ConfigError(f"unknown cluster option; valid keys: {', '.join(OPTION_TYPES)}", key=str(key),
                              source=source)
        if value is None:
            continue
        tp = OPTION_TYPES[k]
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tp is list and isinstance(value, str):
            value = [value]
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
            raise ConfigError(f"expected {tp.__name__}, got {value!r}", key=str(key), source=source)
        if tp in (int, float) and value < 0:
            raise ConfigError(f"must be >= 0, got {value!r}", key=str(key), source=source)
        if k == "cluster" and value not in CLUSTERS:
            raise ConfigError(f"unknown cluster {value!r}; valid choices: {', '.join(CLUSTERS)}", key=str(key),
                              source=source)
        out[k] = value
    return out


def find_profile(name: str | Path) -> Path:
    """A profile path as given, else grids/profiles/<name>[.yaml] under the working directory or the repo."""
    path = Path(name)
    if path.is_file():
        return path
    roots = (Path.cwd(), Path(__file__).resolve().parent.parent)
    for root in roots:
        for rel in (Path(name), Path("grids") / "profiles" / name):
            for cand in (root / rel, root / rel.with_name(rel.name + ".yaml")):
                if cand.is_file():
                    return cand
    raise ConfigError("profile file not found (looked as given and under grids/profiles/)", source=str(name))


def load_profile(path: str | Path | None) -> dict:
    """A cluster profile: a YAML mapping of the options above (optionally nested under `cluster:`)."""
    if not path:
        return {}
    from study.config import read_yaml

    found = find_profile(path)
    raw = read_yaml(found)
    if set(raw) == {"cluster"} and isinstance(raw["cluster"], dict):
        raw = raw["cluster"]
    return check_options(raw, source=str(found))


def resolve_options(cli: dict | None = None, profile: dict | None = None, grid: dict | None = None, *,
                    grid_source: str = "grid") -> dict:
    """Merge cluster options with precedence CLI > profile > grid > DEFAULTS (None in `cli` means unset).

    `profile` and `grid` are raw mappings (validated here); the result also records where each value came from
    under the key 'sources'.
    """
    layers = [("default", dict(DEFAULTS)),
              ("grid", check_options(grid, source=f"{grid_source} (cluster)")),
              ("profile", check_options(profile, source="profile") if profile else {}),
              ("cli", {k: v for k, v in (cli or {}).items() if v is not None})]
    out: dict = {}
    sources: dict = {}
    for name, layer in layers:
        for k, v in layer.items():
            out[k] = v
            sources[k] = name
    gpus = out.get("gpus_per_node") or 0
    if "tasks_per_node" not in out:
        out["tasks_per_node"] = gpus if gpus > 0 else 1  # one task per GPU
        sources["tasks_per_node"] = sources.get("gpus_per_node", "default")
    if gpus and out["tasks_per_node"] != gpus:
        raise ConfigError(f"tasks_per_node={out['tasks_per_node']} but gpus_per_node={gpus}: one task per GPU",
                          key="tasks_per_node")
    if out.get("cluster") is not None and out["cluster"] not in CLUSTERS:
        raise ConfigError(f"unknown cluster {out['cluster']!r}; valid choices: {', '.join(CLUSTERS)}",
                          key="--cluster")
    out["sources"] = sources
    return out


def executor_parameters(options: dict, *, name: str) -> dict:
    """AutoExecutor.update_parameters kwargs for resolved options."""
    gpus = options.get("gpus_per_node") or 0
    params = {
        "name": name,
        "timeout_min": int(options["time"]),
        "nodes": int(options.get("nodes") or 1),
        "tasks_per_node": int(options.get("tasks_per_node") or 1),
        "gpus_per_node": int(gpus) if gpus else None,
        "cpus_per_task": options.get("cpus_per_task"),
        "mem_gb": options.get("mem_gb"),
        "slurm_array_parallelism": int(options["array_parallelism"]),
        "slurm_partition": options.get("partition"),
        "slurm_account": options.get("account"),
        "slurm_qos": options.get("qos"),
        "slurm_constraint": options.get("constraint"),
        "slurm_setup": options.get("setup"),
        "slurm_additional_parameters": options.get("additional"),
        "slurm_signal_delay_s": options.get("signal_delay_s"),
    }
    return {k: v for k, v in params.items() if v is not None}


def make_executor(cluster: str, logs: str | Path, options: dict, *, name: str):
    """An AutoExecutor for `cluster` with the options applied. `cluster` must be given: AutoExecutor would pick
    SLURM whenever `srun` exists, even with no daemon running."""
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown cluster {cluster!r}; valid choices: {', '.join(CLUSTERS)}", key="--cluster")
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
    return executor


# ---------------------------------------------------------------------------------------------------
# The job callable
# ---------------------------------------------------------------------------------------------------
def job_environment():
    """submitit's JobEnvironment inside a submitit job (slurm, local or debug), else None."""
    if not any(k in os.environ for k in ("SUBMITIT_EXECUTOR", "SUBMITIT_DEBUG_JOB_ID")):
        return None
    try:
        return submitit.JobEnvironment()
    except Exception:  # not inside a job after all
        return None


def _submitit_usr_handler():
    """The handler submitit's process_job installed for its preemption signal, if that is what is installed."""
    from submitit.core.job_environment import JobEnvironment, SignalHandler

    sig = JobEnvironment._usr_sig()
    handler = signal.getsignal(sig)
    if isinstance(getattr(handler, "__self__", None), SignalHandler):
        return sig, handler
    return sig, None


def _wants_cuda(cfg) -> bool:
    if cfg.train.device == "cpu":
        return False
    import torch

    return cfg.train.device == "cuda" or torch.cuda.is_available()


def init_distributed(env, cfg) -> bool:
    """Start the process group for a multi-task job (True if this call started it).

    Uses submitit's TorchDistributedEnvironment (MASTER_ADDR = first node, a port derived from the job id,
    RANK/WORLD_SIZE/LOCAL_RANK from the scheduler). On GPU each task sees only its own GPU.
    """
    if env is None or env.num_tasks <= 1:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    from submitit.helpers import TorchDistributedEnvironment

    denv = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    cuda = _wants_cuda(cfg)
    if cuda:
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if len(visible) > 1:  # all of the node's GPUs are visible: keep this task's own
            os.environ["CUDA_VISIBLE_DEVICES"] = visible[denv.local_rank % len(visible)]
        elif not visible:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(denv.local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=denv.rank, world_size=denv.world_size,
                            timeout=_dt.timedelta(minutes=30))
    print(f"study: process group {backend} rank {denv.rank}/{denv.world_size} "
          f"master {denv.master_addr}:{denv.master_port}", file=sys.stderr, flush=True)
    return True


def _limit_threads(env) -> None:
    """Give torch the CPUs the scheduler allotted this task (oversubscribed OpenMP threads are many times
    slower on a loaded machine). A user's OMP_NUM_THREADS wins; outside a job nothing changes."""
    if env is None or os.environ.get("OMP_NUM_THREADS"):
        return
    n = None
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        n = int(os.environ["SLURM_CPUS_PER_TASK"])
    elif env.num_tasks > 1:
        n = max(1, (os.cpu_count() or 1) // max(1, env.num_tasks // max(1, env.num_nodes)))
    if n:
        import torch

        torch.set_num_threads(n)


def _record_job(cfg, root, axes, env) -> None:
    """Write the job id into the run's status.json (keeping its state) if submit did not already."""
    if env is None:
        return
    rd = RunDir.for_config(cfg, root, axes)
    status = rd.read_status()
    state = status.get("state")
    if state in FINAL_STATES or (status.get("job_id") == env.job_id and status.get("job_cluster") == env.cluster):
        return
    rd.write_status(state or "queued", job_id=env.job_id, job_cluster=env.cluster)


def _ignore_late_signal(signum, frame) -> None:
    print(f"study: ignoring {signal.Signals(signum).name}: already checkpointed and requeueing", file=sys.stderr,
          flush=True)


def _recording_stop():
    """A study.train.StopFlag that remembers every signal received, not only the last one."""
    from study.train import StopFlag

    class RecordingStop(StopFlag):
        def __init__(self):
            super().__init__()
            self.received: set[int] = set()

        def request(self, signum: int = signal.SIGTERM) -> None:
            self.received.add(signum)
            super().request(signum)

    return RecordingStop()


class TrainCell(Checkpointable):
    """The submitted callable: train (or resume) one cell into <root>/<grid>/<run-name>/.

    Holds only the resolved config (as a plain dict), the results root, the axes and the submit command line:
    no checkpoint path, no state. `checkpoint()` (called by submitit on preemption/timeout, after the trainer
    has saved) returns a fresh TrainCell with the same arguments; the requeued job resumes from the newest valid
    checkpoint on disk. Returns the run's final state ('completed', 'diverged', 'interrupted').
    """

    def __init__(self, config: dict, root: str, axes: dict | None = None, argv: list[str] | None = None):
        self.config = config
        self.root = str(Path(root).resolve())
        self.axes = dict(axes) if axes else None
        self.argv = list(argv) if argv is not None else None

    @property
    def run_name(self) -> str:
        from study.config import resolve
        from study.results import run_name

        return run_name(resolve(self.config), self.axes)

    def __repr__(self) -> str:
        return f"TrainCell(grid={self.config.get('grid')!r}, axes={self.axes!r}, root={self.root!r})"

    def __call__(self) -> str:
        from study.config import resolve
        from study.train import train_run

        cfg = resolve(self.config, source="submitted config")
        env = job_environment()
        usr_sig, submitit_handler = _submitit_usr_handler()
        _limit_threads(env)
        started_group = init_distributed(env, cfg)
        stop = _recording_stop()
        try:
            rank = 0
            if started_group:
                import torch.distributed as dist

                rank = dist.get_rank()
            if rank == 0:
                _record_job(cfg, self.root, self.axes, env)
            result = train_run(cfg, self.root, axes=self.axes, argv=self.argv, stop=stop)
        finally:
            if started_group:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
        print(f"study: {Path(result.run_dir).name}: {result.state} at step {result.step}", file=sys.stderr,
              flush=True)
        if (result.state == "interrupted" and submitit_handler is not None and usr_sig in stop.received
                and (env is None or env.global_rank == 0)):
            # The checkpoint is on disk; now do what submitit does on its preemption signal: checkpoint() gives a
            # fresh TrainCell, submitit dumps it, requeues the job and exits (SystemExit propagates).
            print("study: preempted or timed out: requeueing to resume from the checkpoint", file=sys.stderr,
                  flush=True)
            import subprocess

            # Committed to requeueing: a repeated signal (SLURM may deliver SIGUSR2 more than once, and
            # `scontrol requeue` sends SIGTERM) must not re-enter submitit's handler half-way.
            for sig in {usr_sig, signal.SIGTERM}:
                signal.signal(sig, _ignore_late_signal)
            try:
                submitit_handler(usr_sig, None)
            except subprocess.CalledProcessError as exc:  # e.g. the job is being cancelled: nothing to requeue
                print(f"study: requeue failed ({exc}); the run stays 'interrupted'", file=sys.stderr, flush=True)
        return result.state

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        return DelayedSubmission(TrainCell(self.config, self.root, self.axes, self.argv))


# ---------------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------------
@dataclass
class Decision:
    cell: object
    run: RunState
    submit: bool
    reason: str

    @property
    def action(self) -> str:
        return "submit" if self.submit else "skip"


def decide(run: RunState, *, rerun_failed: bool = False) -> tuple[bool, str]:
    """(submit?, reason) for one run (see the module docstring)."""
    s = run.state
    if s == "completed":
        return False, f"completed at step {run.step}"
    if s == "diverged":
        return False, f"diverged at step {run.diverged_step or run.step} (a result)"
    if s in ("queued", "running"):
        if run.job_state is not None and run.live:
            return False, f"{s} as job {run.job_id} ({run.job_state})"
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
        return True, f"interrupted at step {run.step}: resumes from its checkpoint"
    return True, "new" if run.recorded is None else f"{run.recorded}, no job"


def plan_cells(cells, root, *, grid=None, rerun_failed: bool = False, scheduler: bool = True) -> list[Decision]:
    runs = grid_status(grid, root, cells=list(cells), scheduler=scheduler)
    out = []
    for cell, run in zip(cells, runs):
        go, reason = decide(run, rerun_failed=rerun_failed)
        out.append(Decision(cell, run, go, reason))
    return out


# ---------------------------------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------------------------------
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


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def mark_submitted(run_dir: Path, job_id: str, cluster: str) -> None:
    """status.json gets the job id; a run with no richer state reads 'queued' (never clobbers running/failed/...)."""
    rd = RunDir(run_dir)
    status = rd.read_status()
    state = status.get("state")
    if state in FINAL_STATES:
        return
    new_state = "queued" if state in (None, "pending", "queued") else state
    rd.write_status(new_state, job_id=str(job_id), job_cluster=cluster, submitted=_dt.datetime.now(
        _dt.timezone.utc).isoformat(timespec="seconds"))


def _run_debug_job(job) -> str:
    """Run a debug-executor job in this process without submitit's pdb-on-error (DebugJob.results)."""
    backup = dict(os.environ)
    os.environ.update(job.environ)
    try:
        return job.submission().result()
    finally:
        os.environ.clear()
        os.environ.update(backup)


def submit_grid(grid, *, root, cluster: str, options: dict, cells=None, where=(), only=(), logs=None,
                dry_run: bool = False, rerun_failed: bool = False, argv: list[str] | None = None,
                scheduler: bool = True, out=print) -> SubmitReport:
    """Select the cells needing a run and submit them as one job array. Prints what it does through `out`."""
    root = Path(root).resolve()
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown cluster {cluster!r}; valid choices: {', '.join(CLUSTERS)}", key="--cluster")
    if cells is None:
        cells = grid.select(where, only) if hasattr(grid, "select") else grid.cells(where=list(where))
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
    if cluster == "local" and len(todo) > 1:
        out(f"note: the local executor starts all {len(todo)} runs at once (array parallelism is a SLURM setting); "
            f"`study run` trains them one after another")
    if dry_run:
        return report

    executor = make_executor(cluster, logs, options, name=grid.name)
    fns = [TrainCell(d.cell.config_dict if hasattr(d.cell, "config_dict") else _to_dict(d.cell.config),
                     str(root), d.cell.axes, argv) for d in todo]
    try:
        with executor.batch():
            jobs = [executor.submit(fn) for fn in fns]
    except StudyError:
        raise
    except Exception as exc:  # sbatch refused (bad partition, ...): say so in one line
        msg = " ".join(str(exc).split())
        raise SubmitError(f"submission to '{cluster}' failed: {msg[:500]}") from exc
    report.job_objects = jobs
    for d, job in zip(todo, jobs):
        report.jobs[d.cell.run_id] = str(job.job_id)
        mark_submitted(Path(d.run.run_dir), str(job.job_id), cluster)
    if cluster == "slurm" and all("_" in str(j.job_id) for j in jobs):
        mains = sorted({str(j.job_id).split("_")[0] for j in jobs})
        report.array_job_id = mains[0] if len(mains) == 1 else None
    record_dir = root / grid.name / ".submissions"
    record_dir.mkdir(parents=True, exist_ok=True)
    report.record = record_dir / f"{_stamp()}.json"
    write_json_atomic(report.record, {
        "grid": grid.name, "grid_file": str(getattr(grid, "path", "")), "cluster": cluster,
        "submitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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
        for d, job in zip(todo, jobs):
            try:
                state = _run_debug_job(job)
            except Exception as exc:
                state = "failed"
                out(f"{d.cell.run_name}: failed: {type(exc).__name__}: {exc}")
            report.results[d.cell.run_id] = state
            out(f"{d.cell.run_name}: {state}")
    return report


def _to_dict(cfg) -> dict:
    from study.config import to_dict

    return to_dict(cfg)


def summarize_options(options: dict) -> str:
    src = options.get("sources", {})
    keys = [k for k in options if k != "sources"]
    return ", ".join(f"{k}={options[k]!r} ({src.get(k, '?')})" for k in sorted(keys))


__all__ = ["CLUSTERS", "OPTION_TYPES", "DEFAULTS", "TrainCell", "Decision", "SubmitReport", "SubmitError",
           "check_options", "load_profile", "find_profile", "resolve_options", "executor_parameters",
           "make_executor", "job_environment", "init_distributed", "decide", "plan_cells", "submit_grid",
           "mark_submitted", "summarize_options"]
