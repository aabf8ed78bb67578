"""The run directory's status (study.results): the run-state enum and the one status.json writer."""

from __future__ import annotations

import json

import pytest

from study.results import STATES, RunDir, RunStatus


def test_run_states_are_an_enum_written_as_the_same_strings(tmp_path):
    assert STATES == ("pending", "queued", "running", "completed", "diverged", "failed", "interrupted")
    rd = RunDir(tmp_path / "run")
    rd.write_status(RunStatus.RUNNING, 3)
    rd.write_status("interrupted", 5, signal=15)
    raw = json.loads((rd.path / "status.json").read_text())
    assert raw["state"] == "interrupted" and raw["step"] == 5 and raw["signal"] == 15
    assert rd.state == RunStatus.INTERRUPTED
    with pytest.raises(ValueError, match="unknown state 'done'"):
        rd.write_status("done")
    assert not [p.name for p in rd.path.iterdir() if p.name != "status.json"]  # no temporary file left


def test_recording_a_job_keeps_richer_states_and_never_touches_a_result(tmp_path):
    fresh, running, done = (RunDir(tmp_path / n) for n in ("fresh", "running", "done"))
    running.write_status("running", 4)
    done.write_status("completed", 9)
    for rd in (fresh, running, done):
        rd.record_job("7_1", "slurm", submitted="2026-01-01T00:00:00+00:00")
    assert fresh.read_status()["state"] == "queued" and fresh.read_status()["job_id"] == "7_1"
    assert running.read_status()["state"] == "running" and running.read_status()["job_cluster"] == "slurm"
    assert done.read_status()["state"] == "completed" and "job_id" not in done.read_status()
    # the job itself, starting after submit recorded it, writes nothing more
    before = (fresh.path / "status.json").read_bytes()
    assert fresh.record_job("7_1", "slurm") is None and (fresh.path / "status.json").read_bytes() == before


