"""Every launch path of one machine: `torchrun --nproc-per-node 2 -m study train` and `study train
--nproc-per-node 2` on CPU (gloo) train the same run; a torchrun run stopped with SIGTERM mid-run and started
again ends bit-identical to an uninterrupted one (metrics without their timing fields, final weights), and
run.json records both ranks in its provenance, at the start and at the resume. Plus the launcher contract
(study.train.distributed.Launch) and the refusals of the convenience flag.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from study.train.distributed import Launch
from tests.conftest import REPO, tiny_raw

STEPS = 24
TIMING = ("time", "tokens_per_s", "mfu")


def _config(tmp_path: Path, cache_dir) -> Path:
    raw = tiny_raw(cache_dir, **{"train.steps": STEPS, "train.ckpt_every": 6, "train.keep_checkpoints": 2,
                                 "train.log_every": 1, "eval.every": 12, "eval.tokens": 2048,
                                 "prores.schedule": "linear", "prores.T": 4})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _torchrun(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "study", "train", str(config), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_dir(out: Path) -> Path:
    (run,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    return run


def _last_step(out: Path) -> int:
    try:
        lines = (_run_dir(out) / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, ValueError, IndexError):
        return 0


def _rows(out: Path) -> list[dict]:
    lines = (_run_dir(out) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _weights_hash(out: Path) -> str:
    state = torch.load(_run_dir(out) / "checkpoints" / f"step_{STEPS:07d}" / "model.pt", weights_only=True)
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _ranks(provenance: dict) -> list[int]:
    return sorted(r["rank"] for r in provenance["ranks"])


@pytest.mark.multiprocess
def test_torchrun_two_ranks_train_resume_bit_exact_and_record_both_ranks(tmp_path, cache_dir):
    config = _config(tmp_path, cache_dir)
    # The reference: the convenience launcher, uninterrupted.
    ref = tmp_path / "ref"
    done = subprocess.run([sys.executable, "-m", "study", "train", str(config), "--out", str(ref),
                           "--nproc-per-node", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"completed at step {STEPS}" in done.stdout

    # torchrun, stopped by SIGTERM (torchrun forwards it to both workers), then started again.
    out = tmp_path / "cut"
    proc = _torchrun(config, out)
    deadline = time.time() + 300
    while _last_step(out) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    status = json.loads((_run_dir(out) / "status.json").read_text())
    assert status["state"] == "interrupted", err[-3000:]
    stopped = status["step"]
    assert 8 <= stopped < STEPS and status["checkpoint_step"] == stopped

    again = _torchrun(config, out)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert f"resuming {_run_dir(out).name} from checkpoint step {stopped}" in err

    assert _rows(out) == _rows(ref)  # every step once, the same losses, LRs, grad norms and alphas
    assert _weights_hash(out) == _weights_hash(ref)
    run = json.loads((_run_dir(out) / "run.json").read_text())
    assert run["world_size"] == 2 and _ranks(run["provenance"]) == [0, 1]
    assert [r["step"] for r in run["resumes"]] == [stopped] and _ranks(run["resumes"][0]["provenance"]) == [0, 1]
    assert len({r["pid"] for r in run["provenance"]["ranks"]}) == 2


def test_launcher_variables_round_trip_and_absent_means_one_process():
    launch = Launch(rank=3, world=8, local_rank=3, local_world=4, master_addr="node1", master_port=29512)
    assert Launch.from_env(launch.env()) == launch
    assert Launch.from_env({"PATH": "/usr/bin"}) is None
    # torchrun's minimum: RANK and WORLD_SIZE; the local rank defaults to the rank
    assert Launch.from_env({"RANK": "1", "WORLD_SIZE": "2"}).local_rank == 1


def test_nproc_per_node_refusals(tmp_path, monkeypatch, capsys):
    from study.cli import main

    assert main(["train", "--nproc-per-node", "0", "--out", str(tmp_path)]) == 2
    assert "--nproc-per-node must be >= 1" in capsys.readouterr().err
    for key, value in Launch(0, 2, 0, 2, "127.0.0.1", 29500).env().items():
        monkeypatch.setenv(key, value)
    assert main(["train", "--nproc-per-node", "2", "--out", str(tmp_path)]) == 2
    assert "inside a launched process" in capsys.readouterr().err
