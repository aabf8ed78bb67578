"""The one-way-each helpers of the dispatch split: the shared option coercer, the run-state enum and the one
status.json writer, and the module path a submitted job's pickle names."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from study import config, dispatch
from study.coerce import coerce
from study.errors import ConfigError
from study.results import STATES, RunDir, RunStatus


def test_one_coercer_for_config_and_cluster_options():
    # the same conversions, the same messages, from both readers
    assert coerce(30, float, "k", None) == 30.0 and isinstance(coerce(30, float, "k", None), float)
    assert coerce(4.0, int, "k", None) == 4 and coerce("1e-3", float, "k", None) == 0.001
    assert coerce(("a", 1), list[Any], "k", None) == ["a", 1]
    with pytest.raises(ConfigError, match="expected int, got True"):
        coerce(True, int, "k", "f.yaml")
    opts = dispatch.check_options({"time": 30.0, "mem_gb": "64", "partition": 7, "setup": "module load x"},
                                  source="p.yaml")
    assert opts == {"time": 30, "mem_gb": 64.0, "partition": "7", "setup": ["module load x"]}
    with pytest.raises(ConfigError, match=r"p.yaml.*nodes.*expected int, got 'two'"):
        dispatch.check_options({"nodes": "two"}, source="p.yaml")
    with pytest.raises(ConfigError, match="expected int, got 'two'"):
        config.resolve({"train": {"steps": "two"}})
    # a run config does not turn numbers into names; cluster options do (a partition called 7)
    with pytest.raises(ConfigError, match="expected str or NoneType, got 7"):
        config.resolve({"name": 7})


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


def test_a_submitted_job_names_its_callable_by_the_module_of_its_class(tmp_path):
    """submitit dumps a job (and its requeue) with cloudpickle, which pickles TrainCell by reference: the module
    path of its class, study.dispatch.job. The old study.launch shim is gone (no pickle can still name it:
    docs/ARCHITECTURE.md, 'study.launch')."""
    import importlib.util

    import cloudpickle
    from submitit.helpers import DelayedSubmission

    cell = dispatch.TrainCell({"grid": "g"}, str(tmp_path), {"lr": "0.1"}, ["study"], "slurm")
    blob = cloudpickle.dumps(DelayedSubmission(cell), protocol=pickle.HIGHEST_PROTOCOL)
    assert b"study.dispatch.job" in blob and b"TrainCell" in blob and b"study.launch" not in blob
    again = pickle.loads(blob).function
    assert isinstance(again, dispatch.TrainCell) and again.axes == {"lr": "0.1"} and again.cluster == "slurm"
    del cell.__dict__["cluster"]  # a TrainCell pickled before it carried its backend's name
    assert pickle.loads(pickle.dumps(cell)).cluster is None
    assert importlib.util.find_spec("study.launch") is None
