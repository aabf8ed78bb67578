"""submitit's debug executor: each job runs in this process, one after another, when its result is asked for."""

from __future__ import annotations

from pathlib import Path

from study.clusters.backend import Backend


def _executor(folder: Path, options: dict):
    import submitit

    return submitit.AutoExecutor(folder=str(folder), cluster="debug")


BACKEND = Backend(name="debug", help="in this process", executor=_executor, in_process=True)
