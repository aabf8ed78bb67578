"""submitit's local executor: the jobs as processes of this machine, under one controller process per job.

A local job id is its controller's pid; the job is alive while that process is a submitit controller.
"""

from __future__ import annotations

import os
from pathlib import Path

from study.clusters.backend import ENDED, RUNNING, Backend
from study.errors import ConfigError

ALIVE, GONE = "alive", "gone"


def job_state(job_id: str) -> str:
    """ALIVE while the job's controller (its pid) is a running submitit process, else GONE."""
    try:
        pid = int(str(job_id).split("_")[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ValueError, OSError):
        return GONE
    if stat.split(") ")[-1].startswith("Z") or b"submitit" not in cmdline:
        return GONE
    return ALIVE


def _check(options: dict) -> None:
    if int(options.get("nodes") or 1) > 1:
        raise ConfigError("the local executor runs on one node; use --nodes 1", key="--nodes")


def _executor(folder: Path, options: dict):
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="local",
                                     local_max_num_timeout=int(options["max_num_timeout"]))
    if options.get("signal_delay_s") is not None:
        # LocalExecutor reads it (USR2 that many seconds before timeout) but AutoExecutor does not forward it.
        executor._executor.parameters["signal_delay_s"] = int(options["signal_delay_s"])
    if options.get("gpus_per_node"):
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


def _notes(options: dict, jobs: int) -> list[str]:
    if jobs <= 1:
        return []
    if options.get("gpus_per_node"):  # each job would get the same first GPUs of the machine
        raise ConfigError(f"--cluster local starts all {jobs} runs at once and each would train on the "
                          f"same {options['gpus_per_node']} GPU(s); submit one run at a time (--only NAME)",
                          key="--cluster")
    return [f"note: the local executor starts all {jobs} runs at once (array parallelism is a SLURM setting); "
            f"`study run` trains them one after another"]


BACKEND = Backend(
    name="local", help="processes on this machine", executor=_executor, check=_check,
    job_states=lambda ids: {j: job_state(j) for j in ids}, phases={ALIVE: RUNNING, GONE: ENDED}, notes=_notes,
)
