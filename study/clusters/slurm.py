"""SLURM through submitit: one job array per submission, job states from squeue and sacct, dependencies.

Its job ids are '123' or '123_4' (array task). `job_states` asks squeue for live jobs first (slurmctld knows a
job the moment it is submitted; the accounting database may lag), then sacct for the others (ended jobs).
Before anything is submitted, the request is checked against the partition's nodes as `sinfo` lists them
(study.clusters.fit): a job no node can hold would wait in the queue forever, without a word from SLURM.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from study.clusters.backend import ENDED, QUEUED, RUNNING, UNKNOWN, Backend
from study.clusters.fit import check_fit, parse_sinfo
from study.errors import SubmitError

# SLURM job states (sacct/squeue) -> what they mean for a run.
LIVE_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED",
               "STOPPED", "RESIZING"}
LIVE_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}
DEAD_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
               "REVOKED", "SPECIAL_EXIT"}
DEAD_OK = {"COMPLETED"}
SIGNAL_DELAY_S = 90  # submitit's default lead of SIGUSR2 before the time limit


def expand_ids(job_field: str) -> list[str]:
    """sacct/squeue JobID -> job ids: '12', '12_3', '12_[0-3,5%2]' -> ['12_0', '12_1', ...]."""
    m = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", job_field)
    if not m:
        return [job_field]
    main, out = m.group(1), []
    for part in m.group(2).split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out += [f"{main}_{i}" for i in range(int(a), int(b) + 1)]
        elif part:
            out.append(f"{main}_{part}")
    return out


def _run(cmd: list[str], timeout: float) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def job_states(job_ids, *, timeout: float = 30) -> dict[str, str]:
    """{job_id: SLURM state} of SLURM job ids ('123', '123_4'); other ids and ids neither squeue nor sacct knows
    are absent from the result; {} when there is no SLURM here."""
    ids = sorted({str(j) for j in job_ids if j and re.fullmatch(r"\d+(_\d+)?", str(j))})
    if not ids:
        return {}
    mains = ",".join(sorted({j.split("_")[0] for j in ids}))
    states: dict[str, str] = {}
    squeue_ok = False
    if shutil.which("squeue"):
        out = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", mains], timeout)
        if out is None:  # squeue exits 1 when none of the ids is known any more: ask again without -j
            out = _run(["squeue", "-h", "-r", "-o", "%i|%T"], timeout)
        if out is not None:
            squeue_ok = True
            for line in out.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 2:
                    for jid in expand_ids(parts[0]):
                        states[jid] = parts[1].split()[0].upper()
    rest = [j for j in ids if j not in states]
    if rest and shutil.which("sacct"):
        out = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j",
                    ",".join(sorted({j.split("_")[0] for j in rest}))], timeout)
        for line in (out or "").splitlines():
            parts = line.strip().split("|")
            if len(parts) < 2 or not parts[0] or "." in parts[0]:
                continue
            state = parts[1].split()[0].upper() if parts[1].strip() else UNKNOWN  # 'CANCELLED by 0'
            for jid in expand_ids(parts[0]):
                if jid in rest and not (state in LIVE_QUEUED | LIVE_RUNNING and squeue_ok):
                    states[jid] = state  # (a live state squeue did not list is stale accounting: ignore it)
    return {j: states[j] for j in ids if j in states}


def _check(options: dict) -> None:
    if shutil.which("sbatch") is None:
        raise SubmitError("--cluster slurm: no `sbatch` on this machine (use --cluster local or debug)")
    out = _run(["sinfo", "-a", "-h", "-N", "-o", SINFO_FORMAT], 30) if shutil.which("sinfo") else None
    if out is not None:  # no answer: nothing to check against (sbatch still refuses what it can see is wrong)
        check_fit(options, parse_sinfo(out))


SINFO_FORMAT = "%N|%P|%c|%m|%G"  # a line per node and partition (-a: hidden ones too): name, partition, CPUs, MB, GRES


def _cancel(job_ids: list[str]) -> None:
    res = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise SubmitError(f"scancel {' '.join(job_ids)} failed: {' '.join(res.stderr.split())[:300]}")


def _no_checkpoint_signal(executor) -> None:
    """submitit writes `#SBATCH --signal=USR2@<delay>` into every job script (its handler of that signal
    checkpoints and requeues); a job that cannot resume gets no such line: at its time limit it ends, TIMEOUT.
    A job array's script is built by a fresh SlurmExecutor through the module's `_make_sbatch_string`, so nothing
    set on this executor reaches it: while this executor submits, that function leaves the line out."""
    from submitit.slurm import slurm as submitit_slurm

    inner = executor._executor  # the SlurmExecutor inside submitit's AutoExecutor
    process = inner._internal_process_submissions

    def submit_without_signal(submissions):
        make = submitit_slurm._make_sbatch_string
        submitit_slurm._make_sbatch_string = lambda **kw: "\n".join(
            ln for ln in make(**kw).split("\n") if not ln.startswith("#SBATCH --signal="))
        try:
            return process(submissions)
        finally:
            submitit_slurm._make_sbatch_string = make

    inner._internal_process_submissions = submit_without_signal


def _executor(folder: Path, options: dict):
    import submitit

    return submitit.AutoExecutor(folder=str(folder), cluster="slurm",
                                 slurm_max_num_timeout=int(options["max_num_timeout"]))


def _parameters(options: dict) -> dict:
    params = {
        "slurm_array_parallelism": options.get("array_parallelism"),
        "slurm_partition": options.get("partition"),
        "slurm_account": options.get("account"),
        "slurm_qos": options.get("qos"),
        "slurm_constraint": options.get("constraint"),
        "slurm_setup": options.get("setup"),
        "slurm_additional_parameters": options.get("additional"),
        "slurm_signal_delay_s": options.get("signal_delay_s"),
    }
    requeue = options.get("requeue")
    if requeue is not None:  # explicit either way: clusters differ in their JobRequeue default
        extra = {k: v for k, v in (options.get("additional") or {}).items() if k not in ("requeue", "no-requeue")}
        params["slurm_additional_parameters"] = {**extra, ("requeue" if requeue else "no-requeue"): True}
    return params


def _run_after(executor, jobs: list) -> None:
    ids = ":".join(str(j.job_id).split("_")[0] for j in jobs[:1])  # an array's tasks share its main id
    extra = dict(executor._executor.parameters.get("additional_parameters") or {})  # --no-requeue, a profile's
    executor.update_parameters(slurm_additional_parameters={**extra, "dependency": f"afterok:{ids}"})


BACKEND = Backend(
    name="slurm", help="a job array on a SLURM cluster", executor=_executor, check=_check, parameters=_parameters,
    job_states=job_states,
    phases={**dict.fromkeys(LIVE_QUEUED, QUEUED), **dict.fromkeys(LIVE_RUNNING, RUNNING),
            **dict.fromkeys(DEAD_FAILED | DEAD_OK, ENDED)},
    run_after=_run_after, array=True, signal_delay_s=SIGNAL_DELAY_S, cancel=_cancel,
    no_checkpoint_signal=_no_checkpoint_signal,
)
