"""`study plan` from pilot results shaped like grids/budget/main-pilot.yaml: seeds and GPU-hours per claim, the
registered design, and `study figures` showing its hash and flagging runs outside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from paper_figures import plan as P
from study import power, preregister
from study.cli import main
from study.collect import collect
from study.cost import estimate
from study.grid import load_grid
from tests.synthetic_runs import write_cell, write_grid

GRIDS = Path(__file__).resolve().parents[1] / "grids"
MAIN, PILOT = GRIDS / "budget" / "main.yaml", GRIDS / "budget" / "main-pilot.yaml"
PILOT_EFFECT = {"linear": {0: -0.3, 1: -0.5}, "equal": {0: 0.2, 1: 0.1}, "reverse": {0: 0.4, 1: 0.1}}


def _ppl(cell) -> float:
    """Baseline 25 (+0.4 per seed, +1 for Post-LN); ProRes arms add their per-seed effect."""
    cfg = cell.config
    base = 25.0 + 0.4 * cfg.train.seed + (cfg.method == "post-ln")
    return base + PILOT_EFFECT.get(cell.axes["schedule"], {}).get(cfg.train.seed, 0.0)


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    write_grid(root, load_grid(PILOT), _ppl, logged=10, hours=0.25)
    return root


def test_the_pilot_and_the_main_stage_share_their_axes():
    pilot, main_grid = load_grid(PILOT), load_grid(MAIN)
    assert [a.name for a in pilot.axes] == [a.name for a in main_grid.axes]
    for a, b in zip(pilot.axes, main_grid.axes, strict=True):
        if a.name != "seed":
            assert [v.label for v in a.values] == [v.label for v in b.values]
    assert {c.config.train.seed for c in pilot.all_cells} == {0, 1}
    assert {c.config.train.steps for c in pilot.all_cells} == {4000}
    assert {c.config.prores.W / c.config.train.steps for c in pilot.all_cells if c.config.prores.W} == {0.12}


def test_plan_seeds_and_gpu_hours_from_the_pilot(pilot):
    p = P.plan(MAIN, collect(pilot))
    rows = {(r["claim_id"], r["scope"]): r for r in p["rows"]}
    assert p["family_size"] == len(p["rows"]) == 7  # 2 ProRes rows, post-vs-pre, 2 schedule rows, 2 spike rows
    pre = rows[("prores-lowers-ppl", "Pre-LN")]
    assert pre["n_pilot"] == 2 and pre["df"] == 1
    assert pre["sd"] == pytest.approx(np.std([-0.3, -0.5], ddof=1))
    assert pre["sd_upper_80"] == pytest.approx(pre["sd"] / math.sqrt(power.chi2_quantile(0.2, 1)))
    # the paper's 130M Pre-LN effect (14.30 - 14.67) relative to its baseline, at the pilot's baseline (25.2)
    assert pre["effect"] == pytest.approx(-0.37 / 14.67 * 25.2, rel=1e-6)
    assert pre["seeds"] == power.seeds_for_power(pre["effect"], pre["sd"], 0.05 / 7, 0.8)
    main_cells = {c.axes["schedule"]: c for c in load_grid(MAIN).all_cells
                  if c.config.method == "pre-ln" and c.config.train.seed == 0}
    per_seed = estimate(main_cells["none"])["gpu_hours"] + estimate(main_cells["linear"])["gpu_hours"]
    assert pre["gpu_hours_per_seed"] == pytest.approx(per_seed) and pre["gpu_hours"] == pytest.approx(
        pre["seeds"] * per_seed)
    assert pre["pilot_hours_per_run"] == pytest.approx(0.25 * (4000 - 1) / 4000, rel=1e-6)
    # projected from the pilot's own clock: 2 runs per seed, each 20000 / 4000 times as long as a pilot run
    assert pre["measured_hours"] == pytest.approx(pre["seeds"] * 2 * pre["pilot_hours_per_run"] * 5, rel=1e-6)
    post_pre = rows[("post-ln-gains-most", "Δ(Post-LN) − Δ(Pre-LN)")]
    assert post_pre["expects"].startswith("> 0 (paper 130M: +0.25")  # the paper's own sign at 130M
    assert post_pre["effect"] == pytest.approx((-0.12 / 14.84) * 26.2 - (-0.37 / 14.67) * 25.2, rel=1e-6)
    spikes = rows[("fewer-loss-spikes", "Pre-LN (spike-score points)")]
    assert spikes["effect"] is None and spikes["seeds"] is None  # no paper number, no variance


def test_study_plan_prints_and_registers_and_figures_flags(pilot, tmp_path, capsys):
    assert main(["plan", str(MAIN), "--pilot", str(pilot)]) == 0
    out = capsys.readouterr().out
    assert "family: m = 7 rows; each planned at alpha/m = 0.05/7 = 0.0071 (Holm's first step)" in out
    p = P.plan(MAIN, collect(pilot))
    pre = next(r for r in p["rows"] if r["scope"] == "Pre-LN")
    assert f"| {pre['seeds']} |" in out and f"{pre['gpu_hours']:.1f}" in out

    assert main(["plan", str(MAIN), "--pilot", str(pilot), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["seeds"] == p["rows"][0]["seeds"]

    root = tmp_path / "results"
    assert main(["plan", str(MAIN), "--pilot", str(pilot), "--register", "--out", str(root), "--seeds", "4"]) == 0
    out = capsys.readouterr().out
    reg = preregister.read(root / "budget-main" / "design.json")
    assert f"registered design {reg.short} of budget-main: 4 seeds" in out and not reg.altered
    dgrid = load_grid(root / "budget-main" / "design-grid.yaml")
    assert {c.config.train.seed for c in dgrid.all_cells} == {0, 1, 2, 3}
    assert set(reg.cells) == {c.run_id for c in dgrid.all_cells}  # the grid to run is the registered cells
    assert {c.run_id for c in dgrid.all_cells if c.config.train.seed < 3} == {c.run_id for c in
                                                                               load_grid(MAIN).all_cells}
    content = json.loads((root / "budget-main" / "design.json").read_text())["content"]
    assert content["seeds"] == [0, 1, 2, 3] and content["family_size"] == 7 and content["alpha"] == 0.05
    assert {"test", "correction", "stopping_rule", "pilot", "rows"} <= set(content)
    assert all(len(r["cells"]) == 4 for r in content["rows"])

    # registering the same plan again is a no-op; a different one is refused without --replace-design
    assert main(["plan", str(MAIN), "--pilot", str(pilot), "--register", "--out", str(root), "--seeds", "4"]) == 0
    assert "already registered design" in capsys.readouterr().out
    assert main(["plan", str(MAIN), "--pilot", str(pilot), "--register", "--out", str(root), "--seeds", "5"]) == 2
    assert "--replace-design" in capsys.readouterr().err

    # the main stage: the registered cells, plus a 5th seed of the Pre-LN pair that the design did not register
    write_grid(root, dgrid, lambda c: _ppl(c) - 5.0, logged=10)
    extra = load_grid(P.design_grid(MAIN, [4], tmp_path / "seed4.yaml"))
    for c in extra.all_cells:
        if c.config.method == "pre-ln" and c.axes["schedule"] in ("none", "linear"):
            write_cell(root, c, _ppl(c) - 5.0, logged=10)
    assert main(["figures", str(root), "--only", "claims"]) == 0
    out = capsys.readouterr().out
    assert f"registered design of budget-main: {reg.short}" in out
    csv = __import__("pandas").read_csv(root / "figures" / "claims.csv")
    main_rows = csv[csv["run_ids"].fillna("").str.len() > 0]
    reg_col = dict(zip(main_rows["scope"], main_rows["registered"], strict=False))
    assert reg_col["Pre-LN: linear − equal"] == "yes"
    assert reg_col["Pre-LN"] == "no (seed 4 not registered)"


def test_the_family_is_the_rows_the_main_stage_tests(pilot, tmp_path):
    """A main grid with only some of the pilot's cells (here Post-LN +- ProRes) is planned at alpha / m, m the
    rows it will test: the pilot's other rows are listed as not in the grid and do not widen the family."""
    import yaml

    raw = yaml.safe_load(MAIN.read_text())
    raw["base_file"] = str(MAIN.parent / raw["base_file"])
    raw["axes"]["method"], raw["axes"]["schedule"] = ["post-ln"], raw["axes"]["schedule"][:2]
    raw.pop("exclude")
    raw["rules"] = [r for r in raw["rules"] if "method" not in r["when"]]
    sub = tmp_path / "post-ln.yaml"
    sub.write_text(yaml.safe_dump(raw))
    full, part = P.plan(MAIN, collect(pilot)), P.plan(sub, collect(pilot))
    tested = [r for r in part["rows"] if not r["main_cells_missing"] and not r["error"]]
    assert part["family_size"] == len(tested) < full["family_size"]
    assert {r["scope"] for r in tested} == {"Post-LN", "Post-LN (spike-score points)"}
    post = next(r for r in tested if r["scope"] == "Post-LN")
    assert post["seeds"] == power.seeds_for_power(post["effect"], post["sd"], 0.05 / len(tested), 0.8)


def test_an_internal_pilot_registers_fresh_seeds(tmp_path, capsys):
    """When the main stage's cells are the pilot's own runs (same config: the grid's earlier seeds as the pilot,
    as in the CPU replication), the registered seeds are the first ones that are not pilot runs: the confirmation
    never re-counts the runs that set its size."""
    root = tmp_path / "results"
    write_grid(root, load_grid(MAIN), _ppl, logged=10, hours=0.25)  # seeds 0, 1, 2 of the main grid itself
    assert main(["plan", str(MAIN), "--pilot", str(root), "--register", "--out", str(tmp_path / "main"),
                 "--seeds", "3"]) == 0
    assert "3 seeds (3, 4, 5)" in capsys.readouterr().out
    dgrid = load_grid(tmp_path / "main" / "budget-main" / "design-grid.yaml")
    assert {c.config.train.seed for c in dgrid.all_cells} == {3, 4, 5}
    assert not {c.run_id for c in dgrid.all_cells} & {c.run_id for c in load_grid(MAIN).all_cells}
    content = json.loads((tmp_path / "main" / "budget-main" / "design.json").read_text())["content"]
    assert content["seeds"] == [3, 4, 5] and set(content["rows"][0]["cells"]) == {"3", "4", "5"}


def test_register_refuses_when_the_main_stage_already_ran(pilot, tmp_path):
    root = tmp_path / "results"
    cell = load_grid(MAIN).all_cells[0]
    write_cell(root, cell, 20.0, logged=5)
    p = P.plan(MAIN, collect(pilot))
    with pytest.raises(preregister.DesignExists, match="already holds 1 runs of the main stage"):
        P.register(p, root, seeds=3)
    out = P.register(p, root, seeds=3, replace=True)
    content = json.loads(out["design"].path.read_text())["content"]
    assert content["runs_before_registration"] == [cell.run_id]


def test_plan_without_pilot_pairs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["plan", str(MAIN), "--pilot", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no claim row has a pilot pair" in err
    assert main(["plan", str(MAIN), "--pilot", str(tmp_path / "nowhere")]) == 2
