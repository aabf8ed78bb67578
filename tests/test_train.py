"""End-to-end training on CPU: run directory contents, every placement learning, divergence as a result."""

from __future__ import annotations

import json
import math

import pytest
import torch

from study import prores
from study.config import run_id
from study.results import RunDir
from study.train import train_run


def _losses(rd: RunDir) -> list[float]:
    return [float(r["loss"]) for r in rd.read_jsonl("metrics.jsonl")]  # NaN is stored as "nan"


def test_run_directory_contract(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"prores.schedule": "linear", "prores.T": 4, "train.probe_every": 10})
    result = train_run(cfg, tmp_path)
    rd = RunDir(result.run_dir)
    assert result.state == "completed" and result.step == 20
    assert rd.path.parent == tmp_path / "runs" and rd.path.name.endswith(run_id(cfg)[:8])
    run = rd.read_run()
    assert run["run_id"] == run_id(cfg) and run["W"] == 16 and run["T"] == 4
    assert len(run["init_fingerprint"]) == 16 and run["provenance"]["versions"]["torch"] == torch.__version__
    assert rd.read_status()["state"] == "completed" and rd.read_status()["step"] == 20
    rows = rd.read_jsonl("metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 21))  # one row per optimizer step
    assert rows[-1]["tokens"] == 20 * 8 * cfg.model.seq_len
    assert rows[4]["alpha"] == pytest.approx(prores.alphas("linear", 5, 4, 4).tolist())
    assert all(r["grad_norm"] > 0 and r["lr"] > 0 for r in rows)
    evals = rd.read_jsonl("eval.jsonl")
    assert [e["step"] for e in evals] == [10, 20]
    assert all(math.isclose(e["ppl"], math.exp(e["loss"])) and e["tokens"] >= 4096 for e in evals)
    probes = rd.read_jsonl("probes.jsonl")
    assert sorted({p["step"] for p in probes}) == [0, 10, 20] and {p["layer"] for p in probes} == {1, 2, 3, 4}
    assert all(p["alpha"] == 0.0 for p in probes if p["step"] == 0)  # alpha(., 0) before the first forward
    branch = torch.load(rd.path / "probes" / "step_0000020.pt", weights_only=True)["branch"]
    assert branch.shape == (4, 2 * 128, 2 * 64) and branch.dtype == torch.float16
    assert (rd.checkpoints / "latest").read_text().strip() == "step_0000020"
    state = json.loads((rd.checkpoints / "step_0000020" / "state.json").read_text())
    assert state["alpha"] == pytest.approx(prores.alphas("linear", 20, 4, 4).tolist())


def test_completed_run_is_never_trained_twice(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"train.steps": 5, "eval.every": 0})
    first = train_run(cfg, tmp_path)
    before = (RunDir(first.run_dir).path / "metrics.jsonl").read_text()
    again = train_run(cfg, tmp_path)
    assert again.state == "completed" and (RunDir(again.run_dir).path / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("norm", ["pre", "post", "sandwich", "deepnorm", "lns", "lns-gain"])
@pytest.mark.parametrize("schedule", ["none", "linear"])
def test_every_placement_learns_with_and_without_prores(norm, schedule, tiny_cfg, tmp_path):
    extra = {"prores.T": 5} if schedule == "linear" else {}
    init = "deepnorm" if norm == "deepnorm" else "normal"
    cfg = tiny_cfg(**{"model.norm": norm, "model.init": init, "prores.schedule": schedule, "train.steps": 30,
                      "train.micro_batch": 8, "eval.every": 0, "eval.at_end": False, **extra})
    rd = RunDir(train_run(cfg, tmp_path).run_dir)
    losses = _losses(rd)
    assert rd.state == "completed"
    first, last = sum(losses[:5]) / 5, sorted(losses[-10:])[5]  # median: one Post-LN spike is not failure
    assert last < first - 0.5, losses


def test_nan_loss_ends_the_run_as_diverged_with_its_step(tiny_cfg, tmp_path, capsys):
    from study.cli import main

    cfg = tiny_cfg(**{"optim.lr": 1e4, "optim.warmup_steps": 0, "optim.grad_clip": 1e9, "train.steps": 30,
                      "eval.every": 0})
    result = train_run(cfg, tmp_path)
    status = RunDir(result.run_dir).read_status()
    assert result.state == status["state"] == "diverged"
    assert status["diverged_step"] == result.step < 30
    bad = _losses(RunDir(result.run_dir))[-1]
    assert not math.isfinite(bad) or bad > 1.5 * math.log(cfg.model.vocab_size)
    # Rerunning a diverged run reports it and exits 0: divergence is a result, not an error.
    assert main(["train", "--out", str(tmp_path), "--set", "model.scale=tiny", "--set", "optim.lr=1e4",
                 "--set", "optim.warmup_steps=0", "--set", "optim.grad_clip=1e9", "--set", "train.steps=30",
                 "--set", "train.micro_batch=4", "--set", "train.global_batch=8", "--set", "eval.every=0",
                 "--set", "eval.tokens=4096", "--set", "eval.batch_size=8", "--set", "train.log_every=5",
                 "--set", "train.ckpt_every=10", "--set", "train.progress=false",
                 "--set", f"data.cache_dir={cfg.data.cache_dir}"]) == 0
    assert capsys.readouterr().out.startswith("diverged at step")
