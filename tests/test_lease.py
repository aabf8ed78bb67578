"""One live owner per run directory (study.lease), and what status / submit make of runs whose owner is gone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from study import dispatch, lease, status
from study.results import RunDir
from tests.conftest import tiny_raw

REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lease(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"token": "other", "host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": lease._proc_start(os.getpid()), "heartbeat": time.time(), **fields}
    (run_dir / lease.LEASE).write_text(json.dumps(data))


def test_live_owner_is_refused_with_its_name(tmp_path):
    with lease.Lease(tmp_path / "run"), pytest.raises(lease.RunBusy,
                                                    match=f"pid {os.getpid()} on {socket.gethostname()}"):
        lease.Lease(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / lease.LEASE).exists()  # released on exit
    with lease.Lease(tmp_path / "run") as again:  # and free again
        assert lease.read(tmp_path / "run")["token"] == again.token


def test_dead_process_on_this_host_is_taken_over(tmp_path):
    _write_lease(tmp_path, pid=_dead_pid(), pid_start=None)
    taken = lease.Lease(tmp_path).acquire()
    try:
        assert "is gone" in taken.took_over and lease.read(tmp_path)["token"] == taken.token
    finally:
        taken.release()


def test_reused_pid_is_not_mistaken_for_the_owner(tmp_path):
    _write_lease(tmp_path, pid_start="1")  # our pid, but a process that started at another time
    assert "is gone" in lease.owner_gone(lease.read(tmp_path))


def test_other_host_is_judged_by_its_heartbeat(tmp_path):
    _write_lease(tmp_path, host="node-elsewhere", pid=1)
    with pytest.raises(lease.RunBusy, match="node-elsewhere"):
        lease.Lease(tmp_path).acquire()
    _write_lease(tmp_path, host="node-elsewhere", pid=1, heartbeat=time.time() - lease.STALE_AFTER_S - 5)
    taken = lease.Lease(tmp_path).acquire()
    taken.release()
    assert "heartbeat" in taken.took_over


def test_heartbeat_refreshes_and_a_lost_lease_is_noticed(tmp_path):
    held = lease.Lease(tmp_path, heartbeat_s=0.05).acquire()
    try:
        first = lease.read(tmp_path)["heartbeat"]
        deadline = time.time() + 10
        while lease.read(tmp_path)["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert lease.read(tmp_path)["heartbeat"] > first and not held.lost
        _write_lease(tmp_path, token="thief")  # taken over after a long stall
        while not held.lost and time.time() < deadline:
            time.sleep(0.02)
        assert held.lost
    finally:
        held.release()
    assert lease.read(tmp_path)["token"] == "thief"  # release never removes someone else's lease


def test_status_reads_a_run_whose_owner_is_gone_as_interrupted_and_submit_resubmits_it(tmp_path):
    run = tmp_path / "run"
    RunDir(run).write_status("running", 6, checkpoint_step=4)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 7)))
    _write_lease(run)  # alive: this process
    alive = status.read_run_state(run)
    assert alive.state == "running" and alive.owner and alive.step == 6 and alive.checkpoint_step == 4
    assert dispatch.decide(alive) == (False, f"running ({alive.owner}); never trained twice")
    assert dispatch.decide(alive, rerun_failed=True)[0] is False
    _write_lease(run, pid=_dead_pid(), pid_start=None)  # SIGKILLed
    gone = status.read_run_state(run)
    assert gone.state == "interrupted" and "owner gone" in gone.error
    assert dispatch.decide(gone)[0] is True
    table = status.format_table([gone])
    assert table.splitlines()[0].split()[:4] == ["RUN", "STATE", "STEP", "CKPT"]
    assert table.splitlines()[1].split()[1:4] == ["interrupted", "6", "4"]  # last logged step, last checkpoint


def test_trainer_refuses_a_run_owned_by_a_live_process(tiny_cfg, tmp_path):
    from study.train import train_run

    cfg = tiny_cfg(**{"train.steps": 2})
    rd = RunDir.for_config(cfg, tmp_path)
    with lease.Lease(rd.path), pytest.raises(lease.RunBusy, match="not training it twice"):
        train_run(cfg, tmp_path, handle_signals=False)
    assert not (rd.path / "metrics.jsonl").exists() and rd.read_status() == {}


# ---------------------------------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------------------------------
def _grid(tmp_path: Path, cache_dir) -> Path:
    base = tiny_raw(cache_dir, **{"model.seq_len": 64, "model.d_model": 32, "model.n_heads": 2,
                                  "model.ffn_hidden": 64, "model.n_layers": 2, "train.steps": 12,
                                  "train.log_every": 1, "train.ckpt_every": 4, "eval.every": 4,
                                  "eval.tokens": 512, "eval.batch_size": 4})
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({"name": "two", "base": base, "axes": {"optim.lr": [1e-3, 2e-3]}}))
    return path


@pytest.mark.multiprocess
def test_two_concurrent_study_run_never_write_the_same_run(tmp_path, cache_dir):
    grid, out = _grid(tmp_path, cache_dir), tmp_path / "results"
    cmd = [sys.executable, "-m", "study", "run", str(grid), "--out", str(out)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    print("\n".join(logs))  # shown with -s: which process trained which cell, which one found it busy
    runs = sorted((out / "two").iterdir())
    runs = [r for r in runs if not r.name.startswith(".")]
    assert len(runs) == 2
    for run in runs:
        rd = RunDir(run)
        assert rd.read_status()["state"] == "completed"
        assert [r["step"] for r in rd.read_jsonl("metrics.jsonl")] == list(range(1, 13))  # once each, in order
        assert [r["step"] for r in rd.read_jsonl("eval.jsonl")] == [4, 8, 12]
        assert not (run / lease.LEASE).exists()


@pytest.mark.multiprocess
def test_sigkilled_run_reads_interrupted_and_is_taken_over(tmp_path, cache_dir):
    grid, out = _grid(tmp_path, cache_dir), tmp_path / "results"
    cmd = [sys.executable, "-m", "study", "run", str(grid), "--out", str(out), "--where", "optim.lr=0.001"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    latest = None
    while time.time() < deadline and proc.poll() is None:
        found = list((out / "two").glob("*/checkpoints/latest")) if (out / "two").exists() else []
        if found:
            latest = found[0]
            break
        time.sleep(0.05)
    assert latest is not None, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = latest.parent.parent
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # what it left behind
    assert (run / lease.LEASE).exists()
    from study.grid import load_grid

    g = load_grid(grid)
    (state,) = status.grid_status(g, out, where=["optim.lr=0.001"], scheduler=False)
    assert state.state == "interrupted" and "owner gone" in state.error
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rd = RunDir(run)
    assert rd.read_status()["state"] == "completed"
    assert [r["step"] for r in rd.read_jsonl("metrics.jsonl")] == list(range(1, 13))


def test_a_requeued_slurm_job_takes_over_its_own_earlier_start(tmp_path, monkeypatch):
    # The job's first start ran on a node that failed: another host, a fresh heartbeat, the same job id.
    _write_lease(tmp_path, host="node-that-failed", pid=4242, slurm_job_id="777_3", slurm_restart=0)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "777_4")  # another array task: a live owner
    with pytest.raises(lease.RunBusy, match="SLURM job 777_3"):
        lease.Lease(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "777_3")  # the same start of the same job (a second process): live
    with pytest.raises(lease.RunBusy, match="SLURM job 777_3"):
        lease.Lease(tmp_path).acquire()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job, requeued
    taken = lease.Lease(tmp_path).acquire()
    taken.release()
    assert "requeued" in taken.took_over


def test_release_sweeps_the_temporary_files_of_killed_lease_writes(tmp_path):
    """A process killed between writing its temporary lease file and linking it leaves `.owner.json.<token>`
    behind (seen in the chaos soak after a node failure); the next owner's release removes it, and never a
    temporary file young enough to be a live writer's."""
    run = tmp_path / "run"
    run.mkdir()
    orphan, fresh = run / f".{lease.LEASE}.{'a' * 32}", run / f".{lease.LEASE}.tmp-1-b"
    orphan.write_text("{}")
    fresh.write_text("{}")
    old = time.time() - 60
    os.utime(orphan, (old, old))
    with lease.Lease(run):
        assert orphan.exists()  # only at release: the owner alone decides
    assert not orphan.exists() and fresh.exists()
    assert sorted(p.name for p in run.iterdir()) == [fresh.name]
