"""Dispatch without SLURM: option precedence, cell selection, dry-run, status, submitit's debug and local executors
(one cell preempted with SIGUSR2 and requeued by submitit, and a 2-process gloo run against a 1-process run).

The real-cluster tests are in test_slurm.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml

import study.clusters as clusters
from study import dispatch, status
from study import lease as study_lease
from study.cli import main
from study.errors import ConfigError
from study.grid import load_grid
from tests.conftest import tiny_raw

# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def grid_file(tmp_path: Path, cache_dir, *, name="lt", lrs=(1e-3, 3e-3), cluster=None, **overrides) -> Path:
    base = tiny_raw(cache_dir, **overrides)
    spec = {"name": name, "base": base, "axes": {"optim.lr": list(lrs)}}
    if cluster is not None:
        spec["cluster"] = cluster
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_status(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps(fields))


def final_weights(run_dir: Path) -> dict:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    path = run_dir / "checkpoints" / Path(latest).name / "model.pt"
    return torch.load(path, weights_only=True)


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in rows]


def run_reference(cfg, root: Path, threads: int = 1):
    """The same cell trained uninterrupted in this process (thread count matched to the job's)."""
    from study.train import train_run

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train_run(cfg, root, handle_signals=False)
    finally:
        torch.set_num_threads(before)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------------------------------------------
# options: CLI > profile > grid
# ---------------------------------------------------------------------------------------------------


def test_option_precedence_cli_over_profile_over_grid(tmp_path):
    grid = {"partition": "grid-p", "time": 30, "gpus_per_node": 2, "array_parallelism": 4, "account": "grid-a"}
    profile = tmp_path / "lab.yaml"
    profile.write_text("partition: prof-p\nqos: high\ntime: 60\naccount: prof-a\nsetup: [module load cuda]\n")
    cli = {"time": 90, "partition": None, "account": "cli-a"}
    opts = dispatch.resolve_options(cli, dispatch.load_profile(profile), grid)
    assert opts["time"] == 90 and opts["sources"]["time"] == "cli"
    assert opts["account"] == "cli-a"
    assert opts["partition"] == "prof-p" and opts["sources"]["partition"] == "profile"
    assert opts["qos"] == "high" and opts["setup"] == ["module load cuda"]
    assert opts["gpus_per_node"] == 2 and opts["sources"]["gpus_per_node"] == "grid"
    assert opts["tasks_per_node"] == 2  # one task per GPU
    assert opts["array_parallelism"] == 4 and opts["nodes"] == 1  # grid, default
    params = dispatch.executor_parameters(opts, name="g")
    assert params["slurm_partition"] == "prof-p" and params["timeout_min"] == 90
    assert params["tasks_per_node"] == params["gpus_per_node"] == 2
    assert params["slurm_array_parallelism"] == 4 and params["slurm_setup"] == ["module load cuda"]
    # no GPUs: one task unless asked, and gpus_per_node is not passed at all
    cpu = dispatch.resolve_options({"tasks_per_node": 2}, None, None)
    assert cpu["tasks_per_node"] == 2 and "gpus_per_node" not in dispatch.executor_parameters(cpu, name="g")


def test_profile_and_grid_cluster_errors_exit_2(tmp_path, cache_dir, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("partitoin: gpu\n")
    with pytest.raises(ConfigError, match="partitoin"):
        dispatch.load_profile(bad)
    grid = grid_file(tmp_path, cache_dir)
    rc = main(["submit", str(grid), "--cluster", "slurm", "--dry-run", "--profile", str(bad),
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.yaml" in err and "partitoin" in err and "valid keys" in err
    bad.write_text("time: soon\n")
    with pytest.raises(ConfigError, match="expected int"):
        dispatch.load_profile(bad)
    with pytest.raises(ConfigError, match="one task per GPU"):
        dispatch.resolve_options({"tasks_per_node": 3}, None, {"gpus_per_node": 2})
    g2 = grid_file(tmp_path, cache_dir, name="g2", cluster={"gpus_per_nod": 1})
    rc = main(["submit", str(g2), "--cluster", "slurm", "--dry-run", "--out", str(tmp_path / "r")])
    assert rc == 2 and "gpus_per_nod" in capsys.readouterr().err
    g3 = grid_file(tmp_path, cache_dir, name="g3")
    rc = main(["submit", str(g3), "--dry-run", "--out", str(tmp_path / "r")])  # no cluster anywhere
    assert rc == 2 and "--cluster" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_profile_cluster_and_grid_defaults_reach_dry_run(tmp_path, cache_dir, capsys):
    grid = grid_file(tmp_path, cache_dir, cluster={"partition": "grid-p", "time": 30, "array_parallelism": 3})
    profile = tmp_path / "p.yaml"
    profile.write_text("cluster: {cluster: slurm, partition: prof-p, qos: q1}\n")
    rc = main(["submit", str(grid), "--profile", str(profile), "--time", "45", "--dry-run",
               "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "cluster 'slurm'" in out and "slurm_partition=prof-p" in out and "slurm_qos=q1" in out
    assert "timeout_min=45" in out and "slurm_array_parallelism=3" in out


# ---------------------------------------------------------------------------------------------------
# dry run, selection, status
# ---------------------------------------------------------------------------------------------------


def test_dry_run_prints_and_submits_nothing(tmp_path, cache_dir, capsys):
    grid = grid_file(tmp_path, cache_dir, lrs=(1e-3, 2e-3, 3e-3))
    root = tmp_path / "results"
    rc = main(["submit", str(grid), "--cluster", "slurm", "--dry-run", "--out", str(root), "--partition", "cpu",
               "--cpus-per-task", "1", "--time", "20", "--array-parallelism", "2", "--mem-gb", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    cells = load_grid(grid).cells()
    for c in cells:
        assert f"submit  {c.run_name}" in out
    assert "would submit 3 run(s) to cluster 'slurm' as one job array" in out
    for frag in ("slurm_partition=cpu", "cpus_per_task=1", "timeout_min=20", "slurm_array_parallelism=2",
                 "mem_gb=2.0", "tasks_per_node=1"):
        assert frag in out
    assert not root.exists(), "a dry run must not write anything"
    rc = main(["submit", str(grid), "--cluster", "slurm", "--dry-run", "--out", str(root),
               "--where", "optim.lr=0.002"])
    out = capsys.readouterr().out
    assert rc == 0 and "would submit 1 run(s)" in out and "1 cells selected" in out
    rc = main(["submit", str(grid), "--cluster", "slurm", "--dry-run", "--out", str(root),
               "--only", cells[2].run_id])
    assert rc == 0 and cells[2].run_name in capsys.readouterr().out


LRS = (1e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 3.5e-3, 4e-3, 4.5e-3, 5e-3)


@pytest.fixture
def fake_grid(tmp_path, cache_dir, monkeypatch):
    """Nine cells whose run directories say: none, completed, diverged, failed, interrupted, running with a live
    job, running whose job FAILED (died without recording an error), queued (array task pending), running with
    no job id but a live owner (study run in another terminal)."""
    path = grid_file(tmp_path, cache_dir, name="sel", lrs=LRS)
    grid = load_grid(path)
    root = tmp_path / "results"
    cells = grid.cells()
    dirs = [c.run_dir(root) for c in cells]
    write_status(dirs[1], state="completed", step=20)
    write_status(dirs[2], state="diverged", step=7, diverged_step=7)
    write_status(dirs[3], state="failed", step=3, error="RuntimeError: boom")
    write_status(dirs[4], state="interrupted", step=10)
    write_status(dirs[5], state="running", step=12, job_id="101", job_cluster="slurm")
    write_status(dirs[6], state="running", step=4, job_id="102_0", job_cluster="slurm")
    write_status(dirs[7], state="queued", job_id="103_1", job_cluster="slurm")
    write_status(dirs[8], state="running", step=2)
    for d in (dirs[5], dirs[8]):  # their trainers hold the run's lease (this test process stands in for them)
        (d / "owner.json").write_text(json.dumps({
            "token": "t", "host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": study_lease._proc_start(os.getpid()), "heartbeat": time.time()}))
    (dirs[1] / "metrics.jsonl").write_text('{"step": 10, "loss": 5.5}\n{"step": 20, "loss": 4.25}\n{"st')
    fake = {"101": "RUNNING", "102_0": "FAILED", "103_1": "PENDING"}
    asked = []

    def fake_states(ids, **kw):
        asked.append(sorted(ids))
        return {j: fake[j] for j in ids if j in fake}

    slurm = clusters.BACKENDS["slurm"]  # its job-state reader, replaced through the backend table
    monkeypatch.setitem(clusters.BACKENDS, "slurm", dataclasses.replace(slurm, job_states=fake_states))
    return path, grid, root, cells, asked


def test_selection_logic(fake_grid):
    path, grid, root, cells, asked = fake_grid
    decisions = dispatch.plan_cells(cells, root, grid=grid)
    assert asked == [["101", "102_0", "103_1"]]
    got = {d.cell.run_id: (d.run.state, d.submit) for d in decisions}
    expect = [("pending", True), ("completed", False), ("diverged", False), ("failed", False),
              ("interrupted", True), ("running", False), ("interrupted", True), ("queued", False),
              ("running", False)]
    assert [got[c.run_id] for c in cells] == expect
    by = {d.cell.run_id: d for d in decisions}
    assert "job 101" in by[cells[5].run_id].reason and "--rerun-failed" in by[cells[3].run_id].reason
    assert "FAILED" in by[cells[6].run_id].run.error
    assert "without the trainer recording" in by[cells[6].run_id].run.error
    assert f"pid {os.getpid()}" in by[cells[8].run_id].reason  # its live owner
    rerun = dispatch.plan_cells(cells, root, grid=grid, rerun_failed=True)
    assert [d.submit for d in rerun] == [True, False, False, True, True, False, True, False, False]


def test_submit_dry_run_and_status_on_fake_runs(fake_grid, capsys):
    path, grid, root, cells, _ = fake_grid
    assert main(["submit", str(path), "--cluster", "slurm", "--dry-run", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "9 cells selected, 3 to submit, 6 skipped" in out
    assert main(["status", str(path), "--out", str(root)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:-1]}
    assert " completed " in lines[cells[1].run_name] and "4.2500" in lines[cells[1].run_name]
    assert "20/20" in lines[cells[1].run_name]
    assert "102_0 (FAILED)" in lines[cells[6].run_name] and " interrupted " in lines[cells[6].run_name]
    assert "103_1 (PENDING)" in lines[cells[7].run_name] and " queued " in lines[cells[7].run_name]
    assert out.splitlines()[-1] == ("9 runs: 1 pending, 1 queued, 2 running, 1 completed, 1 diverged, 1 failed, "
                                    "2 interrupted")
    assert main(["status", str(path), "--out", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["failed"] == 1 and len(data["runs"]) == 9
    row = next(r for r in data["runs"] if r["run_id"] == cells[1].run_id)
    assert row["state"] == "completed" and row["loss"] == 4.25 and row["step"] == 20
    assert main(["status", str(path), "--out", str(root), "--no-scheduler", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in data["runs"]].count("running") == 2  # recorded, and their owners are alive


def test_effective_state_table():
    eff = status.effective_state
    assert eff("completed", "FAILED") == ("completed", None)
    assert eff("diverged", "RUNNING") == ("diverged", None)
    assert eff("running", "RUNNING") == ("running", None)
    assert eff("queued", "RUNNING") == ("running", None)
    assert eff("interrupted", "PENDING") == ("queued", None)  # requeued
    assert eff("interrupted", "REQUEUED") == ("queued", None)
    assert eff("failed", "PENDING") == ("queued", None)  # resubmitted
    # A job that ended without the trainer recording an error is resumed by a plain submit, never 'failed'.
    for dead in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
        assert eff("running", dead)[0] == "interrupted"
        assert dead in eff("running", dead)[1]
        assert eff("queued", dead)[0] == "pending"  # cancelled while still queued: never started
    assert eff("failed", "FAILED") == ("failed", None)  # the trainer recorded it
    assert eff("interrupted", "CANCELLED") == ("interrupted", None)
    assert eff("running", None) == ("running", None) and eff(None, None) == ("pending", None)
    assert eff("running", clusters.local.GONE)[0] == "interrupted"
    assert clusters.slurm.expand_ids("7_[0-2,5%2]") == ["7_0", "7_1", "7_2", "7_5"]
    assert clusters.slurm.expand_ids("7_3") == ["7_3"]


def test_mark_submitted_keeps_richer_states(tmp_path):
    fresh, interrupted, done = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_status(interrupted, state="interrupted", step=10, error=None)
    write_status(done, state="completed", step=20)
    dispatch.mark_submitted(fresh, "5_0", "slurm")
    dispatch.mark_submitted(interrupted, "5_1", "slurm")
    dispatch.mark_submitted(done, "5_2", "slurm")
    assert read_status(fresh)["state"] == "queued" and read_status(fresh)["job_id"] == "5_0"
    assert read_status(interrupted)["state"] == "interrupted" and read_status(interrupted)["step"] == 10
    assert read_status(interrupted)["job_id"] == "5_1"
    assert "job_id" not in read_status(done)


def test_last_jsonl_row_reads_only_the_tail(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"step": i, "loss": i / 10}) + "\n" for i in range(1, 20001)) + '{"ste')
    assert status.last_jsonl_row(path) == {"step": 20000, "loss": 2000.0}
    assert status.last_jsonl_row(tmp_path / "none.jsonl") is None


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


def test_checkpoint_returns_a_fresh_callable(tmp_path):
    cell = dispatch.TrainCell({"grid": "g", "model": {"scale": "tiny"}}, str(tmp_path), {"lr": "0.001"}, ["study"])
    cell.some_state = "must not travel"
    delayed = cell.checkpoint()
    fresh = delayed.function
    assert isinstance(fresh, dispatch.TrainCell) and fresh is not cell
    assert (fresh.config, fresh.root, fresh.axes, fresh.argv) == (cell.config, cell.root, cell.axes, cell.argv)
    assert not hasattr(fresh, "some_state") and delayed.args == () and delayed.kwargs == {}
    assert "checkpoints" not in json.dumps(vars(fresh))


# ---------------------------------------------------------------------------------------------------
# submitit executors
# ---------------------------------------------------------------------------------------------------


def test_debug_executor_runs_cells_in_process_and_never_twice(tmp_path, cache_dir, capsys):
    grid = grid_file(tmp_path, cache_dir, name="dbg", **{"train.steps": 10, "eval.every": 0})
    root = tmp_path / "results"
    assert main(["submit", str(grid), "--cluster", "debug", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "submitted 2 job(s)" in out
    cells = load_grid(grid).cells()
    for c in cells:
        st = read_status(c.run_dir(root))
        assert st["state"] == "completed" and st["step"] == 10 and st["job_id"].startswith("DEBUG_")
        assert st["job_cluster"] == "debug"
    (record,) = (root / "dbg" / ".submissions").glob("*.json")
    rec = json.loads(record.read_text())
    assert rec["cluster"] == "debug" and set(rec["jobs"]) == {c.run_id for c in cells}
    before = {c.run_id: (c.run_dir(root) / "metrics.jsonl").read_bytes() for c in cells}
    assert main(["submit", str(grid), "--cluster", "debug", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 to submit" in out and "nothing to submit (0 new jobs)" in out
    assert len(list((root / "dbg" / ".submissions").glob("*.json"))) == 1
    assert before == {c.run_id: (c.run_dir(root) / "metrics.jsonl").read_bytes() for c in cells}
    assert main(["status", str(grid), "--out", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 runs: 2 completed"


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


def test_local_executor_preempted_with_usr2_requeues_and_resumes_bit_identical(tmp_path, cache_dir, monkeypatch):
    """SIGUSR2 to the running task: the trainer checkpoints, submitit's handler dumps TrainCell.checkpoint()
    and requeues (exit 144 on the local executor), the controller restarts the task, which resumes from disk."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    steps = 60
    grid_path = grid_file(tmp_path, cache_dir, name="pre", lrs=(2e-3,),
                          **{"train.steps": steps, "train.log_every": 1, "eval.every": 0})
    grid = load_grid(grid_path)
    root = tmp_path / "results"
    opts = dispatch.resolve_options({"cluster": "local", "time": 30}, None, grid.cluster)
    report = dispatch.submit_grid(grid, root=root, cluster="local", options=opts, out=lambda *a: None)
    (job,) = report.job_objects
    (cell,) = grid.cells()
    run_dir = cell.run_dir(root)
    try:
        wait_for(lambda: read_status(run_dir).get("checkpoint_step", 0) >= 10
                 and read_status(run_dir).get("state") == "running", 240, "a checkpoint at step >= 10")
        tasks = [p for p in _children(int(job.job_id))
                 if b"submitit.core._submit" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(tasks) == 1, tasks
        os.kill(tasks[0], signal.SIGUSR2)
        results = job.results()  # waits for the controller: requeued task, then the resumed one
    finally:
        if job.state == "RUNNING":
            job.cancel()
    assert results == ["completed"]
    st = read_status(run_dir)
    assert st["state"] == "completed" and st["step"] == steps
    resumes = json.loads((run_dir / "run.json").read_text()).get("resumes", [])
    assert len(resumes) == 1 and 10 <= resumes[0]["step"] < steps, resumes
    log = job.paths.stderr.read_text()
    assert "requeueing to resume from the checkpoint" in log
    assert f"from checkpoint step {resumes[0]['step']}" in log
    assert [s for s, _ in losses(run_dir)] == list(range(1, steps + 1))  # none lost, none twice

    ref = run_reference(cell.config, tmp_path / "ref", threads=1)
    assert ref.state == "completed"
    assert_identical(final_weights(run_dir), final_weights(Path(ref.run_dir)))
    assert losses(run_dir) == losses(Path(ref.run_dir))


# Two gloo processes vs one process, same global batch (8 sequences: 2 ranks x 1 micro-batch of 4 vs 1 process
# x 2 micro-batches of 4). The gradients are the same sums taken in another order (per-rank partial sums, then
# the all-reduce), so fp32 losses differ only by rounding that training amplifies slowly. Tolerance: relative
# difference below 1e-5 at every one of 20 steps (measured on CPU: 1.5e-7 at most).
MP_RTOL = 1e-5


def test_local_executor_two_gloo_processes_match_one_process(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    steps = 20
    grid_path = grid_file(tmp_path, cache_dir, name="ddp", lrs=(3e-3,),
                          **{"train.steps": steps, "train.log_every": 1, "eval.every": 0})
    grid = load_grid(grid_path)
    (cell,) = grid.cells()
    root = tmp_path / "results"
    opts = dispatch.resolve_options({"cluster": "local", "time": 30, "tasks_per_node": 2}, None, grid.cluster)
    report = dispatch.submit_grid(grid, root=root, cluster="local", options=opts, out=lambda *a: None)
    (job,) = report.job_objects
    try:
        results = job.results()
    except Exception:
        print(job.paths.stderr.read_text()[-3000:])
        raise
    assert results == ["completed", "completed"]  # one result per task
    run_dir = cell.run_dir(root)
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    assert "process group gloo rank 0/2" in job.paths.stderr.read_text()

    ref = run_reference(cell.config, tmp_path / "ref", threads=1)
    multi, single = losses(run_dir), losses(Path(ref.run_dir))
    assert [s for s, _ in multi] == [s for s, _ in single] == list(range(1, steps + 1))
    rel = [abs(a - b) / abs(b) for (_, a), (_, b) in zip(multi, single, strict=True)]
    print(f"2-process vs 1-process loss: max relative difference {max(rel):.2e} over {steps} steps")
    assert max(rel) < MP_RTOL, rel


def test_a_study_error_ends_a_job_in_one_line(tmp_path, cache_dir, monkeypatch):
    """A job process (local executor: a process of its own, like a SLURM task) that stops on a StudyError logs
    it as the CLI would, one line, and fails; submitit still has the error for job.result()."""
    from study import lease as study_lease
    from study.dispatch.job import TrainCell

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid = load_grid(grid_file(tmp_path, cache_dir, name="busy", lrs=(2e-3,), **{"train.steps": 2}))
    (cell,) = grid.cells()
    root = tmp_path / "results"
    opts = dispatch.resolve_options({"cluster": "local", "time": 5}, None, grid.cluster)
    executor = clusters.backend("local").executor(tmp_path / "logs", opts)
    with study_lease.Lease(cell.run_dir(root)):  # this process owns the run: the job must refuse it
        busy = executor.submit(TrainCell(cell.config_dict, str(root), cell.axes))
        with pytest.raises(Exception, match="not training it twice"):
            busy.result()
    err = busy.paths.stderr.read_text()
    assert "Traceback" not in err and "not training it twice" in err, err[-2000:]



def test_the_job_hook_passes_other_exceptions_to_the_default_hook(monkeypatch, caplog):
    """Only StudyErrors become one line; a bug keeps the default hook (its traceback). Not in debug jobs,
    which run inside the submitting process."""
    import sys
    import types

    from study.dispatch import job
    from study.errors import DataError

    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: seen.append(a[1]))
    job._study_errors_in_one_line(types.SimpleNamespace(cluster="debug"))
    assert sys.excepthook.__name__ == "<lambda>"
    job._study_errors_in_one_line(types.SimpleNamespace(cluster="slurm"))
    bug, user = RuntimeError("a bug"), DataError("no such store")
    with caplog.at_level("ERROR", logger="study"):
        sys.excepthook(RuntimeError, bug, None)
        sys.excepthook(DataError, user, None)
    assert seen == [bug]
    assert [r.getMessage() for r in caplog.records] == ["no such store"]
