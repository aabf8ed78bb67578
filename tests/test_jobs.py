"""`study run --jobs N`: cells in parallel child processes give exactly the sequential results; the console has one
line per finished cell; SIGTERM makes every running child checkpoint and stop, and a rerun finishes the grid."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from study.grid import load_grid
from study.results import RunDir
from tests.conftest import tiny_raw

REPO = Path(__file__).resolve().parents[1]


def _grid(tmp_path, cache_dir, steps=10, **extra) -> Path:
    base = tiny_raw(cache_dir, **{"train.steps": steps, "train.ckpt_every": steps, "eval.every": steps,
                                  "train.console_every": steps, **extra})
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "jobs", "base": base,
                                    "axes": {"optim.lr": [1e-3, 3e-3], "seed": [0, 1]}}))
    return path


def _study(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "study", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _weights(run_dir: Path) -> dict:
    step = RunDir(run_dir).read_status()["step"]
    return torch.load(run_dir / "checkpoints" / f"step_{step:07d}" / "model.pt", weights_only=True)


def test_threads_per_job_share_the_cores(monkeypatch):
    from study import jobs

    monkeypatch.setattr(jobs, "available_cores", lambda: 16)
    assert [jobs.threads_per_job(n) for n in (1, 2, 3, 4, 16, 32)] == [16, 8, 5, 4, 1, 1]


@pytest.mark.multiprocess
def test_jobs_2_is_bit_identical_to_one_after_another(tmp_path, cache_dir):
    from study.cli import main

    grid = _grid(tmp_path, cache_dir)
    assert main(["run", str(grid), "--out", str(tmp_path / "seq")]) == 0
    proc = _study("run", str(grid), "--out", str(tmp_path / "par"), "--jobs", "2")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    finished = [x for x in lines if "completed in" in x]
    assert len(finished) == 4 and sum("eta " in x for x in finished) == 3, lines  # the last one has no ETA
    assert lines[-1] == "summary: 4 completed"
    assert all(x.startswith(("study: ", "summary: ")) for x in lines), lines
    assert len(lines) == 1 + 1 + 4 + 1, lines  # grid line, pool line, one per cell, summary: no child chatter

    for cell in load_grid(grid).cells():
        seq, par = RunDir.for_config(cell.config, tmp_path / "seq", cell.axes), \
            RunDir.for_config(cell.config, tmp_path / "par", cell.axes)
        assert par.read_status()["state"] == "completed"
        a, b = _weights(seq.path), _weights(par.path)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), cell.run_name
        losses = [[r["loss"] for r in d.read_jsonl("metrics.jsonl")] for d in (seq, par)]
        assert losses[0] == losses[1]
        assert seq.read_jsonl("eval.jsonl")[-1]["loss"] == par.read_jsonl("eval.jsonl")[-1]["loss"]


@pytest.mark.multiprocess
def test_sigterm_checkpoints_the_running_cells_and_a_rerun_finishes(tmp_path, cache_dir):
    steps = 200
    grid = _grid(tmp_path, cache_dir, steps=steps, **{"train.log_every": 1, "train.ckpt_every": 100,
                                                       "eval.every": 0})
    runs = [RunDir.for_config(c.config, tmp_path / "r", c.axes) for c in load_grid(grid).cells()]
    proc = _study("run", str(grid), "--out", str(tmp_path / "r"), "--jobs", "2")
    deadline = time.time() + 600
    while sum(len(r.read_jsonl("metrics.jsonl")) >= 5 for r in runs) < 2:  # two cells are training
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert out.splitlines()[-1] == "summary: 2 interrupted, 2 not started", out
    stopped = [r for r in runs if r.read_status().get("state") == "interrupted"]
    assert len(stopped) == 2
    for r in stopped:  # each checkpointed where it stopped, as a single run does
        status = r.read_status()
        assert 5 <= status["step"] < steps and status["checkpoint_step"] == status["step"]
        assert status["signal"] == signal.SIGTERM
    assert sum(not r.path.exists() for r in runs) == 2  # the others never started
    stopped_at = {r.path: r.read_status()["step"] for r in stopped}

    proc = _study("run", str(grid), "--out", str(tmp_path / "r"), "--jobs", "2")
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0 and out.splitlines()[-1] == "summary: 4 completed", out
    for r in runs:
        assert [x["step"] for x in r.read_jsonl("metrics.jsonl")] == list(range(1, steps + 1))
        resumes = json.loads((r.path / "run.json").read_text()).get("resumes", [])
        assert [x["step"] for x in resumes] == ([stopped_at[r.path]] if r.path in stopped_at else [])
