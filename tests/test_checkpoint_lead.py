"""study.cost.checkpoint_plan: what a checkpoint writes (fp32 weights + AdamW state; per rank under FSDP) and
whether the checkpoint signal's lead leaves time to write it, as `study info` and `study submit` report it:
a warning when the lead is short at the bandwidth we plan with, a refusal when it is short even at a fast one."""

from __future__ import annotations

import json

import pytest

from study import cost
from study.cli import main
from study.config import resolve
from study.model import info
from tests.conftest import REPO


def _cfg(scale, **train):
    return resolve({"model": {"scale": scale}, "train": {"global_batch": 512, **train}})


def test_checkpoint_bytes_per_rank_and_node():
    params = info(_cfg("7b").model)["params"]
    fsdp = cost.checkpoint_plan(_cfg("7b", parallelism="fsdp"), world_size=32, nodes=4)
    assert fsdp["bytes"] == 12 * params  # fp32 weights (4) + AdamW moments (8) per parameter
    assert fsdp["bytes_per_rank"] == 12 * params // 32 and fsdp["writers"] == 32
    assert fsdp["bytes_per_node"] == fsdp["bytes"] // 4
    ddp = cost.checkpoint_plan(_cfg("7b", parallelism="ddp"), world_size=32, nodes=4)
    assert ddp["bytes"] == ddp["bytes_per_node"] == 12 * params and ddp["writers"] == 1  # rank 0 writes it all
    pure = cost.checkpoint_plan(_cfg("7b", parallelism="fsdp", precision="bf16-pure"), world_size=32, nodes=4)
    assert pure["bytes"] == 6 * params  # bf16 weights and moments


def test_lead_verdicts_follow_the_bandwidths():
    cfg = _cfg("7b", parallelism="fsdp", log_every=1)
    plan = cost.checkpoint_plan(cfg, world_size=32, nodes=4)
    writes = 2 * plan["bytes_per_node"]  # a save in flight, then the stop's own
    at_assumed = plan["reach_s"] + writes / cost.ASSUMED_WRITE_BPS + cost.LEAD_MARGIN_S
    at_fast = plan["reach_s"] + writes / cost.FAST_WRITE_BPS + cost.LEAD_MARGIN_S
    assert plan["lead_needed_s"] == pytest.approx(at_assumed)

    def verdict(lead):
        return cost.checkpoint_plan(cfg, world_size=32, nodes=4, lead_s=lead)["verdict"]

    assert verdict(at_assumed + 1) == "ok" and verdict(at_assumed - 1) == "warn"
    assert verdict(at_fast + 1) == "warn" and verdict(at_fast - 1) == "refuse"
    needs = cost.checkpoint_plan(cfg, world_size=32, nodes=4, lead_s=90)["needs_bps"]
    assert needs == pytest.approx(writes / (90 - plan["reach_s"] - cost.LEAD_MARGIN_S))
    assert cost.checkpoint_plan(cfg, world_size=32, nodes=4, lead_s=5)["needs_bps"] == float("inf")
    assert cost.suggested_lead(plan) % 30 == 0 and cost.suggested_lead(plan) >= plan["lead_needed_s"]


def test_study_info_reports_the_checkpoint_and_warns_on_a_short_lead(capsys):
    assert main(["info", "7b", "--world-size", "32", "--nodes", "4", "--parallelism", "fsdp"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint: 80.9 GB" in out and "2.53 GB per rank x 32" in out
    assert "warning: --signal-delay-s 90 is short" in out and "give it 120 s or more" in out
    assert main(["info", "130m", "--json", "--signal-delay-s", "300"]) == 0
    plan = json.loads(capsys.readouterr().out)["checkpoint"]
    assert plan["verdict"] == "ok" and plan["writers"] == 1 and plan["lead_s"] == 300
    assert main(["info", "130m", "--world-size", "3", "--nodes", "2"]) == 2


def test_study_submit_warns_then_refuses_a_short_lead(tmp_path, capsys):
    grid = str(REPO / "grids" / "paper" / "7b.yaml")
    cmd = ["submit", grid, "--cluster", "slurm", "--dry-run", "--out", str(tmp_path)]
    assert main(cmd) == 0  # the grid's own lead (120 s) is sized for its checkpoint
    out = capsys.readouterr().out
    assert "a 120 s signal lead needs" in out and "warning" not in out
    assert main([*cmd, "--signal-delay-s", "90"]) == 0
    assert "warning: --signal-delay-s 90 is short" in capsys.readouterr().out
    assert main([*cmd, "--signal-delay-s", "30"]) == 2
    err = capsys.readouterr().err
    assert "--signal-delay-s 30 cannot fit a checkpoint of 80.9 GB" in err and "\n" not in err.strip()
