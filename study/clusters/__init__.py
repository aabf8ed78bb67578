"""Where a grid's jobs can run: one record per cluster kind (a backend, study/clusters/backend.py), in BACKENDS.

    backend("slurm").executor(logs, options)     # a submitit executor; .check, .parameters, .job_states, ...
    phase("PENDING")                             # 'queued': what a job-state word means, whichever backend said it

`study submit --cluster`, the `cluster:` of a profile or a grid, `study data prepare --cluster` and the job
states of `study status` all read this table, and nothing else names a cluster kind. The options a submission
takes (time, partition, ...) are study/clusters/options.py's, shared by every backend.

To add a backend: a module here defining its `BACKEND = Backend(...)` (slurm.py is the fullest example, debug.py
the smallest), and its name in the tuple below.
"""

from __future__ import annotations

from study.clusters import debug, local, slurm
from study.clusters.backend import ENDED, QUEUED, RUNNING, UNKNOWN, Backend
from study.errors import unknown_name

BACKENDS: dict[str, Backend] = {b.BACKEND.name: b.BACKEND for b in (slurm, local, debug)}

__all__ = ["BACKENDS", "Backend", "backend", "phase", "QUEUED", "RUNNING", "ENDED", "UNKNOWN"]


def backend(name, *, key: str = "--cluster", source: str | None = None) -> Backend:
    """The backend called `name`; a ConfigError naming the valid ones if there is none."""
    if name not in BACKENDS:
        raise unknown_name("cluster", name, BACKENDS, key=key, source=source)
    return BACKENDS[name]


def phase(word: str | None) -> str | None:
    """QUEUED, RUNNING or ENDED for a job-state word of any backend ('PENDING', 'alive'); None if none knows it."""
    first = word.split()[0] if word else None  # 'CANCELLED by 0' -> 'CANCELLED'
    return next((b.phases[first] for b in BACKENDS.values() if first in b.phases), None)
