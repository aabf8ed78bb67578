"""Dispatch (submitit): the cells of a grid that still need running, as one job array, resumable on preemption.

    plan = plan_cells(cells, root, rerun_failed=False)        # what to submit, what to skip and why
    report = submit_grid(grid, root=..., cluster="slurm", options=resolve_options(cli, profile, grid.cluster))

The cluster kinds (slurm, local, debug: what each does differently) and the options a submission takes are
study.clusters' (one record per backend; study/clusters/options.py); their names are re-exported here.

Selection (`decide`), from the run's status.json refined by the scheduler (study.status):
    completed, diverged       skipped: a result (divergence is a result, never retried)
    queued / running          skipped when the recorded job is alive (its backend's job-state reader: sacct/squeue,
                              or the local controller's pid); never duplicated. Recorded but unconfirmable (no job
                              id, no scheduler answer): skipped too, unless --rerun-failed
    failed                    only with --rerun-failed (it resumes from its latest checkpoint if it has one): the
                              trainer recorded an error (an exception, a full disk) that a rerun would repeat
    interrupted               resubmitted: it stopped with a checkpoint (SIGTERM/SIGUSR2/Ctrl-C, timeout or
                              preemption without requeue), or its owner died without recording an error (SIGKILL,
                              OOM kill, node failure: a stale lease, or the recorded job ended while the run said
                              running) and resumes from its latest checkpoint; continuing, not rerunning a failure.
                              Skipped while its recorded job is still alive (its trainer died, the job did not:
                              the job resumes it)
    pending                   submitted (also a job cancelled while still queued)
    (study.status.effective_state and study.lease decide these from the files and the scheduler.)

Modules: select (Decision, decide, plan_cells), job (TrainCell and what runs inside the job), submit
(submit_grid, make_executor, the submission record), prepare (`study data prepare --cluster`: a token store's
preparation as a job array and a finalize job, and what a rerun finds of an earlier one). A submitted job's
pickle names its callable by the module of its class, `study.dispatch.job.TrainCell` (docs/ARCHITECTURE.md,
"study.launch", says why the old name is gone).

One executor (the backend's: `AutoExecutor(folder=logs, cluster=...)`) and one `executor.batch()` per
submission: on SLURM one job array (`slurm_array_parallelism` running at once); one task per GPU
(`tasks_per_node = gpus_per_node`, or --tasks-per-node for CPU processes), the process group set up inside the
job from `submitit.helpers.TorchDistributedEnvironment` (gloo on CPU, nccl on GPU; never torchrun).

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

from study.clusters import BACKENDS, Backend, backend
from study.clusters.options import (
    CPUS_PER_CPU_TASK,
    CPUS_PER_GPU_TASK,
    DEFAULTS,
    OPTION_ALIASES,
    OPTION_TYPES,
    ClusterOptions,
    check_options,
    executor_parameters,
    find_profile,
    load_profile,
    option_warnings,
    resolve_options,
    summarize_options,
)
from study.dispatch.job import TrainCell, init_distributed, job_environment
from study.dispatch.select import Decision, decide, plan_cells
from study.dispatch.submit import SubmitReport, make_executor, mark_submitted, submit_grid
from study.errors import SubmitError

__all__ = ["BACKENDS", "Backend", "backend", "ClusterOptions", "OPTION_TYPES", "OPTION_ALIASES", "DEFAULTS",
           "CPUS_PER_GPU_TASK", "CPUS_PER_CPU_TASK", "TrainCell", "Decision", "SubmitReport", "SubmitError",
           "check_options", "load_profile", "find_profile", "resolve_options",
           "executor_parameters", "make_executor", "option_warnings", "job_environment", "init_distributed",
           "decide", "plan_cells", "submit_grid", "mark_submitted", "summarize_options"]
