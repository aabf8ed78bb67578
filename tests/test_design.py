"""study.design on results shaped like real grids: settings, seeds, contrasts, duplicates; and the claims table, the
paper tables and the quickstart's verdict line built on it (2 LRs never pool their seeds; depth is computed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study import design
from study.collect import collect
from study.grid import load_grid
from tests.synthetic_runs import write_cell, write_grid

GRIDS = Path(__file__).resolve().parents[1] / "grids"

TWO_LRS = """
name: two-lrs
base: {model: {scale: tiny}, train: {steps: 40}, recipe: cpu}
axes:
  optim.lr: [1.0e-3, 2.0e-3]
  schedule: [none, {label: linear-W8, prores.schedule: linear, prores.W: 8}]
  seed: [0, 1, 2]
"""
BASE = {0: 100.0, 1: 104.0, 2: 97.0}
GAIN = {1e-3: {0: -2.0, 1: -2.1, 2: -1.9}, 2e-3: {0: 0.5, 1: -0.5, 2: 0.3}}  # one LR helps, the other does not


def _two_lr_ppl(cell) -> float:
    cfg = cell.config
    on = cfg.prores.schedule != "none"
    return BASE[cfg.train.seed] + (GAIN[cfg.optim.lr][cfg.train.seed] if on else 0.0) + (cfg.optim.lr == 2e-3)


@pytest.fixture(scope="module")
def two_lrs(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-lrs")
    write_grid(root, TWO_LRS, _two_lr_ppl)
    return root, collect(root)


# ---------------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------------
def test_settings_leave_the_seed_and_its_axis_out(two_lrs):
    _, col = two_lrs
    d = design.Design(col.runs)
    assert len(d.settings) == 4 and all(s.seeds == [0, 1, 2] and s.error is None for s in d.settings.values())
    assert all("seed" not in s.axes and "train.seed" not in s.config for s in d.settings.values())
    assert {s.axes["optim.lr"] for s in d.settings.values()} == {"0.001", "0.002"}
    keys = design.setting_keys(col.runs)
    assert keys.nunique() == 4 and (keys.value_counts() == 3).all()


def _tiny_design(tmp_path, axes: str) -> design.Design:
    """The Design of a tiny grid's runs (every run at 50 ppl) with these axes (YAML lines) and a ± ProRes axis."""
    text = ("name: tiny-grid\nbase: {model: {scale: tiny}, train: {steps: 20}, recipe: cpu}\naxes:\n" + axes
            + "  schedule: [none, {label: linear, prores.schedule: linear, prores.T: 2}]\n")
    write_grid(tmp_path, text, lambda c: 50.0)
    return design.Design(collect(tmp_path).runs)


def test_a_seed_axis_under_another_name_is_the_seeds(tmp_path):
    d = _tiny_design(tmp_path, "  rep: [{label: r0, train.seed: 0}, {label: r1, train.seed: 1}]\n")
    assert len(d.settings) == 2 and all(s.seeds == [0, 1] and "rep" not in s.axes for s in d.settings.values())


def test_runs_without_a_readable_config_have_no_setting():
    runs = pd.DataFrame([{"run_id": "a", "state": "completed", "cfg.method": np.nan, "cfg.train.seed": np.nan}])
    assert design.Design(runs).settings == {}
    assert design.setting_keys(runs).tolist() == ["a"]


# ---------------------------------------------------------------------------------------------------
# the Done-when case: 2 LRs x 3 seeds x ±ProRes -> two rows of n = 3, in claims.md/.csv and the verdict line
# ---------------------------------------------------------------------------------------------------
def test_two_lrs_give_two_rows_of_three_seeds(two_lrs, tmp_path):
    from paper_figures.claims import claims_table, verdict_lines

    _, col = two_lrs
    res = claims_table(col, tmp_path)
    rows = res.data[(res.data["claim_id"] == "prores-lowers-ppl") & (res.data["n"] > 0)]
    assert len(rows) == 2 and list(rows["n"]) == [3, 3]
    by_lr = {("lr=0.001" in s): r for s, r in zip(rows["scale"], rows.itertuples(), strict=True)}
    assert by_lr[True].mean == pytest.approx(-2.0) and by_lr[False].mean == pytest.approx(0.1)
    assert by_lr[True].verdict == "holds" and by_lr[False].verdict == "not significant"
    md = (tmp_path / "claims.md").read_text()
    assert "(n=3)" in md and "(n=6)" not in md
    csv = pd.read_csv(tmp_path / "claims.csv")
    assert sorted(csv[(csv["claim_id"] == "prores-lowers-ppl") & (csv["n"] > 0)]["n"]) == [3, 3]
    lines = verdict_lines(col)
    assert len(lines) == 2 and all("(3 seeds, 95% paired t)" in line for line in lines)
    assert any("lr=0.001" in line and "−2.0 ppl" in line and ": holds (" in line for line in lines)
    assert any("lr=0.002" in line and "+0.1 ppl" in line for line in lines)


def test_the_quickstart_prints_the_verdict_lines_of_the_design(two_lrs, capsys, monkeypatch):
    from study.commands import quickstart

    _, col = two_lrs
    quickstart.print_verdicts(col)
    out = capsys.readouterr().out
    assert out.count("Pre-LN + ProRes vs Pre-LN") == 2 and "n=6" not in out and "6 seeds" not in out


# ---------------------------------------------------------------------------------------------------
# duplicates: two runs for one (setting, seed) are an error, never a silent pick
# ---------------------------------------------------------------------------------------------------
def test_two_runs_for_one_seed_are_an_error_everywhere(tmp_path):
    from paper_figures.claims import claims_data, verdict_lines
    from paper_figures.tables import table_2

    grid = load_grid(_grid_file(tmp_path, TWO_LRS))
    root = tmp_path / "results"
    write_grid(root, grid, _two_lr_ppl)
    dup = next(c for c in grid.all_cells if c.config.train.seed == 1 and c.config.prores.schedule == "none"
               and c.config.optim.lr == 1e-3)
    write_cell(root, dup, 90.0, run_dir=root / grid.name / "copy-of-a-run")
    col = collect(root)
    d = claims_data(col)
    # collect names the second directory of one run id `id#path`: the error names both
    error = f"error: 2 runs for seed 1 (ids {dup.run_id}, {dup.run_id}#{root / grid.name / 'copy-of-a-run'})"
    bad = d[(d["claim_id"] == "prores-lowers-ppl") & d["scale"].str.contains("lr=0.001")].iloc[0]
    assert bad["verdict"] == error and np.isnan(bad["p"]) and bad["family"] == 1
    good = d[(d["claim_id"] == "prores-lowers-ppl") & d["scale"].str.contains("lr=0.002")].iloc[0]
    assert good["n"] == 3 and not good["verdict"].startswith("error")
    assert any(line.endswith(error + ".") for line in verdict_lines(col))
    t2 = table_2(col, tmp_path / "t2", scales={"tiny": "130M"}).data
    cell = t2[(t2["method"] == "Pre-LN") & (t2["scale"] == "130M") & ~t2["prores"]].iloc[0]
    assert cell["ours_text"] == error
    with pytest.raises(ValueError, match="more than one row for seed 1"):
        design_free = pd.DataFrame({"seed": [0, 1, 1], "v": [1.0, 2.0, 3.0]})
        from study.stats import paired_by_seed
        paired_by_seed(design_free, design_free.iloc[:2], "v")


def _grid_file(tmp_path, text) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------
# contrasts
# ---------------------------------------------------------------------------------------------------
def test_an_lr_axis_keeps_methods_apart_where_the_lr_may_follow_the_method(tmp_path):
    d = _tiny_design(tmp_path, "  method: [pre-ln, post-ln]\n  optim.lr: [1.0e-3, 2.0e-3]\n")
    post = d.where(**{"method": "post-ln", "prores.schedule": "linear"})
    pre = d.where(**{"method": "pre-ln", "prores.schedule": "linear"})
    for s in post:
        match = d.partners(s, pre, design.METHOD)
        assert [m.config["optim.lr"] for m in match] == [s.config["optim.lr"]]  # never across LRs


def test_the_recipe_lr_of_each_method_does_not_block_the_method_contrast():
    grid = load_grid(GRIDS / "budget" / "main.yaml")
    from paper_figures.plan import cells_table  # the grid's cells as a runs table

    d = design.Design(cells_table(grid), states=None)
    post = d.where(**{"method": "post-ln", "prores.schedule": "linear"})
    pre = d.where(**{"method": "pre-ln", "prores.schedule": "linear"})
    assert len(post) == 1 and post[0].config["optim.lr"] != pre[0].config["optim.lr"]
    assert d.partners(post[0], pre, design.METHOD) == pre


# ---------------------------------------------------------------------------------------------------
# the depth claim on the grids that exist for it
# ---------------------------------------------------------------------------------------------------
def _depth_rows(root):
    from paper_figures.claims import claims_data

    d = claims_data(collect(root))
    return d[d["claim_id"] == "gain-grows-with-depth"]


def _gain(cell) -> float:
    """ProRes gains 0.1 ppl per layer (more with depth), with a seed-dependent wobble; baselines 100 + seed."""
    cfg = cell.config
    seed = cfg.train.seed
    on = cfg.prores.schedule != "none"
    return 100.0 + seed - (0.1 * cfg.model.n_layers + 0.05 * seed * (cfg.model.n_layers > 12) if on else 0.0)


def test_depth_is_computed_on_results_shaped_like_grids_cpu_depth(tmp_path):
    text = (GRIDS / "cpu" / "depth.yaml").read_text().replace("base_file: ../base/cpu.yaml",
                                                              f"base_file: {GRIDS / 'base' / 'cpu.yaml'}")
    write_grid(tmp_path / "one-seed", text, _gain)
    rows = _depth_rows(tmp_path / "one-seed")
    assert set(rows["scope"]) == {"Pre-LN: Δ(12L) − Δ(4L), deepest vs shallowest of 4/8/12L",
                                  "Post-LN: Δ(12L) − Δ(4L), deepest vs shallowest of 4/8/12L"}
    assert (rows["n"] == 1).all() and rows["mean"].tolist() == pytest.approx([-0.8, -0.8])
    assert (rows["verdict"] == "cannot be tested").all()  # one seed: computed, not testable
    seeded = text.replace("  model.n_layers: [4, 8, 12]\n", "  model.n_layers: [4, 8, 12]\n  seed: [0, 1, 2]\n")
    assert seeded != text
    write_grid(tmp_path / "seeds", seeded, lambda c: _gain(c) + 0.01 * c.config.train.seed ** 2
               * (c.config.prores.schedule != "none") * (c.config.model.n_layers == 12))
    rows = _depth_rows(tmp_path / "seeds")
    assert (rows["n"] == 3).all() and (rows["verdict"] == "holds").all()
    assert rows["mean"].tolist() == pytest.approx([-0.8 + 0.05 / 3] * 2)


def test_depth_is_computed_on_results_shaped_like_grids_budget_depth(tmp_path):
    grid = load_grid(GRIDS / "budget" / "depth.yaml")
    write_grid(tmp_path, grid, lambda c: _gain(c) - 0.01 * c.config.train.seed * (c.config.model.n_layers == 48)
               * (c.config.prores.schedule != "none"), logged=10)
    rows = _depth_rows(tmp_path)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["scope"] == "Pre-LN: Δ(48L) − Δ(12L), deepest vs shallowest of 12/24/48L"
    n = len({c.config.train.seed for c in grid.all_cells})
    assert row["n"] == n and row["mean"] == pytest.approx(-3.6 - 0.06 * np.mean(range(n)))


def test_depth_on_grids_paper_depth_compares_its_extremes_under_its_own_t_rule(tmp_path):
    grid = load_grid(GRIDS / "paper" / "depth.yaml")
    assert {c.config.prores.T for c in grid.all_cells if c.axes["series"] == "pre-ln-prores"} == {1000, 500}
    write_grid(tmp_path, grid, _gain, logged=5)
    rows = _depth_rows(tmp_path)
    assert rows["scope"].tolist() == ["Pre-LN: Δ(120L) − Δ(12L), deepest vs shallowest of 12/24/48/72/96/120L"]
    assert rows["mean"].iloc[0] == pytest.approx(-10.8) and rows["n"].iloc[0] == 1


def test_linear_vs_equal_at_the_same_w_differs_in_t():
    a = design.Setting("a", {"prores.schedule": "linear", "prores.T": 6, "prores.W": 48, "optim.lr": 1}, {})
    b = design.Setting("b", {"prores.schedule": "equal", "prores.T": 48, "prores.W": 48, "optim.lr": 1}, {})
    c = design.Setting("c", {"prores.schedule": "equal", "prores.T": 96, "prores.W": 96, "optim.lr": 1}, {})
    d = design.Design(pd.DataFrame(columns=["run_id", "state"]))
    assert d.differ_only_in(a, b, design.SCHEDULE) and not d.differ_only_in(a, c, design.SCHEDULE)
    assert not d.differ_only_in(a, a, design.SCHEDULE)


def test_a_copy_of_a_grid_folder_makes_every_seed_a_duplicate(tmp_path):
    """Two grids with identical settings (a rerun into another grid name) are the same settings: their seeds are
    duplicates, shown as an error, not two pairs."""
    grid = load_grid(_grid_file(tmp_path, TWO_LRS))
    root = tmp_path / "r"
    write_grid(root, grid, _two_lr_ppl)
    shutil.copytree(root / grid.name, root / "two-lrs-rerun")
    d = design.Design(collect(root).runs)
    assert len(d.settings) == 4 and all(s.error and "2 runs for seed 0" in s.error for s in d.settings.values())
