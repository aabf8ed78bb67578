"""The record of one cluster kind (a backend): everything `study submit`, `study status` and `study data prepare
--cluster` need to know of where jobs run, so that none of them tests a cluster's name.

A backend answers for its jobs in its own words (SLURM's PENDING, the local controller's 'alive'); `phases` says
what each word means for a run: QUEUED and RUNNING are a live job (never submitted twice), ENDED a job that will
not run again. study.status reads runs' states from these phases alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, ENDED = "queued", "running", "ended"
UNKNOWN = "UNKNOWN"  # the scheduler knows the job but gives no state (a blank sacct row): the files decide


def _accept(options: dict) -> None:
    """No preflight check."""


def _no_parameters(options: dict) -> dict:
    return {}


def _no_notes(options: dict, jobs: int) -> list[str]:
    return []


@dataclass(frozen=True)
class Backend:
    """One cluster kind. Only `name`, `help` and `executor` are required; the rest default to "nothing to do"."""

    name: str  # --cluster NAME, a profile's or grid's `cluster:`, status.json's job_cluster
    help: str  # a few words for `--help`: what runs where
    # A submitit executor for a log folder and the resolved options (study.clusters.options); the shared and the
    # executor-specific parameters are applied to it afterwards with update_parameters.
    executor: Callable[[Path, dict], Any]
    # Preflight: raise a StudyError (one line) when this machine or these options cannot submit here.
    check: Callable[[dict], None] = _accept
    # This executor's own submitit parameters, prefixed with its name as AutoExecutor takes them ('slurm_qos').
    parameters: Callable[[dict], dict] = _no_parameters
    # {job id: state word} for recorded job ids (ids it does not know are left out); None: nothing can be asked.
    job_states: Callable[[list[str]], dict[str, str]] | None = None
    phases: Mapping[str, str] = field(default_factory=dict)  # state word -> QUEUED | RUNNING | ENDED
    # Make the executor's next submission start only once these jobs succeeded (a scheduler dependency);
    # None: the caller waits for them itself.
    run_after: Callable[[Any, list], None] | None = None
    array: bool = False  # one executor.batch() is one job array (job ids 'ARRAY_TASK')
    in_process: bool = False  # jobs run in this process, when their result is asked for
    signal_delay_s: int | None = None  # the checkpoint signal's default lead before the time limit, if it sends one
    # Lines to print before submitting this many jobs, or a ConfigError when this many cannot run together here.
    notes: Callable[[dict, int], list[str]] = _no_notes
    # Cancel these recorded jobs (a preparation's stranded finalize job); None: nothing can be cancelled.
    cancel: Callable[[list[str]], None] | None = None
    # Make an executor's jobs ones that cannot resume from a checkpoint (a token store's preparation tasks): no
    # checkpoint signal before the time limit. None: its jobs get none anyway.
    no_checkpoint_signal: Callable[[Any], None] | None = None
