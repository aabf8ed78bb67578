"""The submitted job: `TrainCell`, the callable submitit pickles, runs (one per task) and requeues.

Inside the job it sets up what the scheduler gave it (threads, the process group from submitit's
TorchDistributedEnvironment, the job id in status.json), trains or resumes the run, and on SIGUSR2 (preemption,
time limit) hands the saved run back to submitit to requeue; study.dispatch explains the signal interplay.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from study.errors import StudyError
from study.results import RunDir, RunStatus

log = logging.getLogger(__name__)


def job_environment() -> submitit.JobEnvironment | None:
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

    from study.train.distributed import Launch, start_group
    from study.train.runtime import wants_cuda

    denv = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    cuda = wants_cuda(cfg.train)
    if cuda:
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if len(visible) > 1:  # all of the node's GPUs are visible: keep this task's own
            os.environ["CUDA_VISIBLE_DEVICES"] = visible[denv.local_rank % len(visible)]
        elif not visible:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(denv.local_rank)
    start_group(Launch.from_env(), cuda=cuda)  # the variables export() just set: torchrun's contract
    log.info("process group %s rank %d/%d master %s:%s", "nccl" if cuda else "gloo", denv.rank, denv.world_size,
             denv.master_addr, denv.master_port)
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


def _study_errors_in_one_line(env) -> None:
    """In a job process of its own (slurm, local), a StudyError that ends the job is logged as the CLI logs it:
    one line. submitit still records the failure (its result pickle keeps the traceback) and re-raises, so the
    job ends FAILED with the run's status.json saying why; anything else keeps Python's traceback (a bug). The
    debug executor runs jobs inside the submitting process, whose CLI already does this."""
    if env is None or env.cluster == "debug":
        return
    default = sys.excepthook

    def one_line(kind, exc, tb):
        if isinstance(exc, StudyError):
            log.error("%s", exc)
        else:
            default(kind, exc, tb)

    sys.excepthook = one_line


def _record_job(cfg, root, axes, env, cluster: str | None) -> None:
    """Write the job id into the run's status.json (keeping its state) if submit did not already. `cluster` is
    the backend that submitted it (study.clusters), which may run another backend's submitit executor."""
    if env is not None:
        RunDir.for_config(cfg, root, axes).record_job(env.job_id, cluster or env.cluster)


def _ignore_late_signal(signum, frame) -> None:
    log.warning("ignoring %s: already checkpointed and requeueing", signal.Signals(signum).name)


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

    Holds only the resolved config (as a plain dict), the results root, the axes, the submit command line and
    the backend's name (study.clusters; None: submitit's executor name): no checkpoint path, no state.
    `checkpoint()` (called by submitit on preemption/timeout, after the trainer has saved) returns a fresh
    TrainCell with the same arguments; the requeued job resumes from the newest valid checkpoint on disk.
    Returns the run's final state ('completed', 'diverged', 'interrupted').
    """

    cluster: str | None = None  # a TrainCell pickled before this attribute existed reads None

    def __init__(self, config: dict, root: str, axes: dict | None = None, argv: list[str] | None = None,
                 cluster: str | None = None):
        self.config = config
        self.root = str(Path(root).resolve())
        self.axes = dict(axes) if axes else None
        self.argv = list(argv) if argv is not None else None
        self.cluster = cluster

    @property
    def run_name(self) -> str:
        from study.config import resolve
        from study.results import run_name

        return run_name(resolve(self.config), self.axes)

    def __repr__(self) -> str:
        return f"TrainCell(grid={self.config.get('grid')!r}, axes={self.axes!r}, root={self.root!r})"

    def __call__(self) -> str:
        from study import console
        from study.config import resolve
        from study.train import train_run

        console.setup()  # a submitit task does not go through the CLI
        cfg = resolve(self.config, source="submitted config")
        env = job_environment()
        usr_sig, submitit_handler = _submitit_usr_handler()
        _study_errors_in_one_line(env)
        _limit_threads(env)
        started_group = init_distributed(env, cfg)
        stop = _recording_stop()
        try:
            rank = 0
            if started_group:
                import torch.distributed as dist

                rank = dist.get_rank()
            if rank == 0:
                _record_job(cfg, self.root, self.axes, env, self.cluster)
            result = train_run(cfg, self.root, axes=self.axes, argv=self.argv, stop=stop)
        finally:
            if started_group:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
        log.info("%s: %s at step %s", Path(result.run_dir).name, result.state, result.step)
        if (result.state == RunStatus.INTERRUPTED and submitit_handler is not None and usr_sig in stop.received
                and (env is None or env.global_rank == 0)):
            # The checkpoint is on disk; now do what submitit does on its preemption signal: checkpoint() gives a
            # fresh TrainCell, submitit dumps it, requeues the job and exits (SystemExit propagates).
            log.warning("preempted or timed out (%s): requeueing to resume from the checkpoint",
                        signal.Signals(usr_sig).name)
            import subprocess

            # Committed to requeueing: a repeated signal (SLURM may deliver SIGUSR2 more than once, and
            # `scontrol requeue` sends SIGTERM) must not re-enter submitit's handler half-way.
            for sig in {usr_sig, signal.SIGTERM}:
                signal.signal(sig, _ignore_late_signal)
            try:
                submitit_handler(usr_sig, None)
            except subprocess.CalledProcessError as exc:  # e.g. the job is being cancelled: nothing to requeue
                log.warning("requeue failed (%s); the run stays 'interrupted'", exc)
        return result.state

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        return DelayedSubmission(TrainCell(self.config, self.root, self.axes, self.argv, self.cluster))
