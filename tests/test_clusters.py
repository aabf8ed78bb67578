"""study.clusters: a cluster backend is one record in one table, and the submit flags are one dataclass.

A dummy backend registered in BACKENDS alone (no other code knows its name) is a valid --cluster and profile
value, submits and runs a grid's cells through its own executor, and its job-state words decide what `study
status` and `study submit` make of a recorded job. Every option of ClusterOptions with a flag is a typed flag.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import submitit

import study.clusters as clusters
from study.cli import main
from study.clusters import ENDED, QUEUED, RUNNING, Backend
from study.clusters.options import FIELDS, FLAGS, OPTION_TYPES, ClusterOptions, resolve_options
from study.grid import load_grid
from tests.test_dispatch import grid_file, read_status, write_status


@pytest.fixture
def dummy(monkeypatch):
    """A backend that runs jobs in this process through submitit's debug executor, with its own job states."""
    seen = {"checks": 0, "folders": [], "states": {}}

    def executor(folder, options):
        seen["folders"].append(folder)
        return submitit.AutoExecutor(folder=str(folder), cluster="debug")

    def check(options):
        seen["checks"] += 1

    backend = Backend(
        name="dummy", help="a test backend", executor=executor, check=check,
        job_states=lambda ids: {j: seen["states"][j] for j in ids if j in seen["states"]},
        phases={"WAITING": QUEUED, "BUSY": RUNNING, "DONE": ENDED}, in_process=True,
        notes=lambda options, jobs: [f"dummy: {jobs} job(s) at {options['time']} min"])
    monkeypatch.setitem(clusters.BACKENDS, "dummy", backend)
    return seen


def test_a_dummy_backend_added_through_the_table_alone_submits_and_runs_the_cells(tmp_path, cache_dir, dummy,
                                                                                  capsys):
    grid = grid_file(tmp_path, cache_dir, name="dm", **{"train.steps": 4, "eval.every": 0})
    root = tmp_path / "results"
    assert main(["submit", str(grid), "--cluster", "dummy", "--time", "7", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "submitted 2 job(s)" in out and "dummy: 2 job(s) at 7 min" in out and "as one submission" in out
    assert dummy["checks"] == 1 and len(dummy["folders"]) == 1
    for cell in load_grid(grid).cells():
        st = read_status(cell.run_dir(root))
        assert st["state"] == "completed" and st["step"] == 4 and st["job_cluster"] == "dummy"
    (record,) = (root / "dm" / ".submissions").glob("*.json")
    assert json.loads(record.read_text())["cluster"] == "dummy"


def test_a_dummy_backends_job_states_decide_status_and_selection(tmp_path, cache_dir, dummy, capsys):
    grid = grid_file(tmp_path, cache_dir, name="ds", lrs=(1e-3,))
    root = tmp_path / "results"
    (cell,) = load_grid(grid).cells()
    write_status(cell.run_dir(root), state="queued", job_id="J1", job_cluster="dummy")
    dummy["states"]["J1"] = "WAITING"
    assert main(["status", str(grid), "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "J1 (WAITING)" in out and out.splitlines()[-1] == "1 runs: 1 queued"
    assert main(["submit", str(grid), "--cluster", "dummy", "--dry-run", "--out", str(root)]) == 0
    assert "queued as job J1 (WAITING)" in capsys.readouterr().out
    dummy["states"]["J1"] = "DONE"  # ended before the run started: pending, submitted again
    assert main(["status", str(grid), "--out", str(root), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["state"] == "pending" and "job ended (DONE)" in run["error"]
    assert main(["submit", str(grid), "--cluster", "dummy", "--dry-run", "--out", str(root)]) == 0
    assert "would submit 1 run(s) to cluster 'dummy'" in capsys.readouterr().out


def test_a_backend_name_is_valid_exactly_while_it_is_in_the_table(tmp_path, cache_dir, monkeypatch, capsys):
    grid = grid_file(tmp_path, cache_dir, name="dn", lrs=(1e-3,))
    profile = tmp_path / "p.yaml"
    profile.write_text("cluster: dummy\n")
    assert main(["submit", str(grid), "--profile", str(profile), "--dry-run", "--out", str(tmp_path / "r")]) == 2
    assert "unknown cluster 'dummy'; valid choices: debug, local, slurm" in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setitem(clusters.BACKENDS, "dummy", Backend(name="dummy", help="x", executor=lambda folder, options: None))
        assert main(["submit", str(grid), "--profile", str(profile), "--dry-run", "--out", str(tmp_path / "r")]) == 0
        assert "would submit 1 run(s) to cluster 'dummy'" in capsys.readouterr().out
        assert resolve_options({"cluster": "dummy"})["cluster"] == "dummy"
    with pytest.raises(SystemExit) as exc:
        main(["submit", str(grid), "--cluster", "dummy", "--dry-run"])
    assert exc.value.code == 2 and "invalid choice: 'dummy'" in capsys.readouterr().err


def test_every_submit_flag_comes_from_the_options_dataclass_with_its_type(capsys):
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert set(FLAGS) == {f.name for f in dataclasses.fields(ClusterOptions) if f.metadata["flag"]}
    for name in FLAGS:
        assert f"--{name.replace('_', '-')}" in text, name
    assert "--no-requeue" in text and "--max-num-timeout" not in text and "--setup" not in text
    for backend in clusters.BACKENDS.values():
        assert f"{backend.name} ({backend.help})" in text
    assert OPTION_TYPES["nodes"] is int and OPTION_TYPES["mem_gb"] is float and OPTION_TYPES["setup"] == list[str]
    for argv in (["--nodes", "two"], ["--mem-gb", "lots"], ["--time", "1.5"]):
        with pytest.raises(SystemExit) as exc:
            main(["submit", "g.yaml", "--cluster", "debug", *argv])
        assert exc.value.code == 2
        assert f"argument {argv[0]}" in capsys.readouterr().err
    defaults = resolve_options({})
    assert all(defaults[k] == f.default for k, f in FIELDS.items() if f.default is not None)
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cpus-per-task" in text and "CPUs per task (= its workers)" in text and "--qos" not in text


def test_phases_say_what_each_backends_words_mean():
    assert clusters.phase("PENDING") == QUEUED and clusters.phase("RUNNING") == RUNNING
    assert clusters.phase("CANCELLED by 0") == ENDED and clusters.phase(clusters.local.GONE) == ENDED
    assert clusters.phase(clusters.local.ALIVE) == RUNNING and clusters.phase("???") is None
    words = [(w, p) for b in clusters.BACKENDS.values() for w, p in b.phases.items()]
    assert len({w for w, _ in words}) == len(set(words))  # no word means two things to two backends
