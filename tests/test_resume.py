"""Interrupted runs resume bit-identically: SIGTERM, SIGKILL after a checkpoint, and a truncated checkpoint.

Each run is a real `python -m study train` process, stopped from outside while it trains, then started again
with the same command; its final weights must equal those of an uninterrupted run exactly (torch.equal).
"""

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

from tests.conftest import tiny_raw

STEPS = 120


def _config(tmp_path, cache_dir) -> Path:
    raw = tiny_raw(cache_dir, **{"train.steps": STEPS,
                                 "train.ckpt_every": 20, "train.keep_checkpoints": 3, "train.log_every": 1,
                                 "eval.every": 40, "prores.schedule": "linear", "prores.T": 10})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "study", "train", str(config), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])


def _run_dir(out: Path) -> Path:
    (run,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    return run


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except (FileNotFoundError, ValueError):  # the run directory is not there yet
            pass
        if proc.poll() is not None:
            pytest.fail(f"training ended before the test could interrupt it:\n{proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("timed out waiting for the run")


def _step(out: Path) -> int:
    try:
        lines = (_run_dir(out) / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, ValueError, IndexError, json.JSONDecodeError):
        return 0


def _final_weights(out: Path) -> dict:
    return torch.load(_run_dir(out) / "checkpoints" / f"step_{STEPS:07d}" / "model.pt", weights_only=True)


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """One uninterrupted run, trained as its own process like the interrupted ones."""
    tmp = tmp_path_factory.mktemp("reference")
    config = _config(tmp, cache_dir)
    _train_to_the_end(config, tmp / "out")
    return config, tmp / "out"


def _interrupt(config: Path, out: Path, until, sig: int) -> tuple[int, str]:
    """Start training, send `sig` once `until()` holds, and return the exit code and stderr."""
    proc = _start(config, out)
    _wait_for(until, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _train_to_the_end(config: Path, out: Path) -> str:
    """Run `study train` (again); it must finish. Returns its stderr."""
    proc = _start(config, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def test_sigterm_then_rerun_is_bit_identical(reference, tmp_path):
    config, ref_out = reference
    out = tmp_path / "out"
    returncode, err = _interrupt(config, out, lambda: _step(out) >= 30, signal.SIGTERM)
    assert returncode == 75, err  # interrupted: rerun to resume
    status = json.loads((_run_dir(out) / "status.json").read_text())
    assert status["state"] == "interrupted" and 30 <= status["step"] < STEPS
    stopped_at = status["step"]
    assert (_run_dir(out) / "checkpoints" / f"step_{stopped_at:07d}").is_dir()  # saved on the way out

    err = _train_to_the_end(config, out)
    assert f"resuming {_run_dir(out).name} from checkpoint step {stopped_at}" in err
    _assert_identical(_final_weights(out), _final_weights(ref_out))
    rows = [json.loads(line) for line in (_run_dir(out) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # no step lost or logged twice
    ref_rows = [json.loads(line) for line in (_run_dir(ref_out) / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_sigkill_after_checkpoint_then_rerun_is_bit_identical(reference, tmp_path):
    config, ref_out = reference
    out = tmp_path / "out"
    _interrupt(config, out, lambda: (_run_dir(out) / "checkpoints" / "step_0000040").is_dir() and _step(out) >= 45,
               signal.SIGKILL)
    assert json.loads((_run_dir(out) / "status.json").read_text())["state"] == "running"  # killed, no say

    err = _train_to_the_end(config, out)
    assert "from checkpoint step" in err
    _assert_identical(_final_weights(out), _final_weights(ref_out))


def test_truncated_checkpoint_is_skipped_for_the_previous_one(reference, tmp_path):
    config, ref_out = reference
    out = tmp_path / "out"
    _interrupt(config, out, lambda: _step(out) >= 50, signal.SIGTERM)
    run = _run_dir(out)
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    model_file = newest / "model.pt"
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])

    err = _train_to_the_end(config, out)
    assert f"checkpoint {newest} is unusable (model.pt has" in err and "truncated" in err
    assert "falling back to an earlier one" in err
    _assert_identical(_final_weights(out), _final_weights(ref_out))
