"""study.cost's disk plan against the files a real tiny run writes, and `study grid show`'s disk lines."""

from __future__ import annotations

import json

import pytest

from study import cost
from study.cli import main
from study.train import train_run


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths)


@pytest.mark.slow
def test_disk_plan_matches_a_real_run(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"train.steps": 20, "train.ckpt_every": 5, "train.keep_checkpoints": 2,
                      "train.probe_every": 10, "train.log_every": 4, "eval.every": 10, "optim.lr": 1 / 300,
                      "prores.schedule": "linear", "prores.T": 7})  # numbers of a full width, as on a GPU
    plan = cost.disk_plan(cfg)
    run = train_run(cfg, tmp_path).run_dir
    kept = sorted((run / "checkpoints").glob("step_*"))
    assert len(kept) == 2 and plan["checkpoints"] == 2 * plan["checkpoint"]
    for folder in kept:  # the tensors are exact; only the containers' few kB are estimated
        assert _size(folder.iterdir()) == pytest.approx(plan["checkpoint"], rel=0.03)
    lines = {name: (run / name).read_text().splitlines() for name in ("metrics.jsonl", "probes.jsonl", "eval.jsonl")}
    pt = sorted((run / "probes").glob("step_*.pt"))
    assert {k: len(v) for k, v in lines.items()} | {"probes/*.pt": len(pt)} == plan["rows"]
    probe_jsonl = _size([run / "probes.jsonl"])
    assert _size(pt) + probe_jsonl == pytest.approx(plan["probes"], rel=0.03)
    # jsonl rows: the writers' own keys, every number at a typical width of 18 characters (a CPU run logs mfu
    # as null: 14 characters fewer in a 230-character row)
    for name, row in (("metrics.jsonl", cost._METRICS_ROW), ("probes.jsonl", cost._PROBE_ROW),
                      ("eval.jsonl", cost._EVAL_ROW)):
        assert {tuple(json.loads(line)) for line in lines[name]} == {tuple(row)}
    assert _size([run / "metrics.jsonl"]) == pytest.approx(plan["metrics"], rel=0.15)
    assert _size([run / "eval.jsonl"]) == pytest.approx(plan["eval"], rel=0.1)


def test_grid_show_prints_the_disk_plan(capsys):
    assert main(["grid", "show", "grids/paper/main.yaml"]) == 0
    out = capsys.readouterr().out
    disk = [line[2:] for line in out.splitlines() if line.startswith("# disk")]
    assert disk[0].startswith("disk per run: checkpoint 1.61 GB-16.4 GB") and "x 2 kept" in disk[0]
    assert "token store" in disk[1] and "105 GB" in disk[1] and "52.4B train tokens" in disk[1]
    assert disk[2].startswith("disk total: checkpoints 627 GB kept")
    assert main(["grid", "show", "grids/paper/main.yaml", "--json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert {c["store"]["train_tokens"] for c in cells} == {100_000 * 512 * 1024 + 1}
    assert all(c["disk"]["rows"]["metrics.jsonl"] == 100_000 for c in cells)


def test_store_disk_before_and_after_preparing(cache_dir, tmp_path):
    import random

    from study.config import resolve
    from study.data import store as store_mod
    from study.data.store_manifest import tokens_needed
    from tests.test_store import _doc

    rng = random.Random(7)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": _doc(rng)}) + "\n" for _ in range(1200)))
    cfg = resolve({"model": {"scale": "tiny", "seq_len": 32}, "train": {"steps": 40, "global_batch": 8},
                   "data": {"source": "files", "paths": [str(tmp_path / "d.jsonl")], "cache_dir": str(cache_dir),
                            "store": True, "store_dir": str(tmp_path / "store")}})
    need = tokens_needed(cfg)
    (plan,) = cost.store_disk([cfg])
    assert not plan["prepared"] and plan["train_tokens"] == need == 40 * 8 * 32 + 1 and plan["bytes_per_token"] == 2
    path = store_mod.prepare(cfg.data, cfg.model.vocab_size, max_tokens=need)
    (done,) = cost.store_disk([cfg])
    assert done["prepared"] and done["bytes"] == _size(p for p in path.glob("*/*") if p.suffix in (".bin", ".npy"))
    train_bin = _size((path / "train").glob("*.bin"))
    assert 2 * need <= train_bin < 2 * need + 2 * 256 * 200  # the cut rounds up to a whole unit (<= 256 documents)
