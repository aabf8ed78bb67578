"""Seeds as an axis, paired statistics over seeds, and the claims table, on synthetic runs with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study import analysis
from study.collect import Collection


# ---- t quantiles and the paired interval -----------------------------------------------------------
@pytest.mark.parametrize("df, q", [(1, 12.706205), (2, 4.302653), (3, 3.182446), (10, 2.228139), (30, 2.042272)])
def test_t_quantile_matches_the_tables(df, q):
    assert analysis.t_quantile(0.975, df) == pytest.approx(q, abs=1e-5)
    assert analysis.t_quantile(0.025, df) == pytest.approx(-q, abs=1e-5)


def test_paired_interval_by_hand():
    s = analysis.paired_interval([-1.0, -2.0, -1.5])
    assert s["n"] == 3 and s["mean"] == pytest.approx(-1.5) and s["sd"] == pytest.approx(0.5)
    hw = 4.302653 * 0.5 / np.sqrt(3)
    assert s["half_width"] == pytest.approx(hw, rel=1e-6)
    assert (s["lo"], s["hi"]) == pytest.approx((-1.5 - hw, -1.5 + hw), rel=1e-6)
    one = analysis.paired_interval([0.7, np.nan])
    assert one["n"] == 1 and one["mean"] == 0.7 and np.isnan(one["half_width"])
    assert analysis.paired_interval([])["n"] == 0


def test_paired_interval_covers_a_known_effect_at_its_nominal_rate():
    """2000 simulated 3-seed experiments with effect -0.4 and noise sd 0.3: about 95% of intervals cover it."""
    rng = np.random.default_rng(1234)
    effect, hits = -0.4, 0
    for _ in range(2000):
        s = analysis.paired_interval(effect + rng.normal(0, 0.3, 3))
        hits += s["lo"] <= effect <= s["hi"]
    assert 0.93 <= hits / 2000 <= 0.97  # binomial sd at 95% over 2000 draws: 0.5%


# ---- verdicts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("diffs, expect, want", [
    ([-1.1, -0.9, -1.0], "negative", "holds"),
    ([1.1, 0.9, 1.0], "negative", "contradicted"),
    ([0.3, -0.3, 0.1, -0.1], "negative", "not significant"),
    ([-1.0], "negative", "not significant"),
    ([], "negative", "not run"),
    ([1.1, 0.9, 1.0], "positive", "holds"),
])
def test_verdict(diffs, expect, want):
    assert analysis.verdict(analysis.paired_interval(diffs), expect) == want


# ---- synthetic collections ---------------------------------------------------------------------------
def _run(run_id, *, method="pre-ln", schedule="none", W=None, n_layers=8, seed=0, ppl=100.0, grid="g", params=368e6):
    return {"run_id": run_id, "run_name": run_id, "grid": grid, "state": "completed", "method": method,
            "schedule": schedule, "label": f"{method}-{schedule}", "scale": "tiny", "n_layers": n_layers,
            "T": None, "W": W, "steps": 400, "d_model": 64, "final_eval_ppl": ppl, "diverged_step": None,
            "cfg.method": method, "cfg.model.n_layers": n_layers, "cfg.prores.schedule": schedule,
            "cfg.prores.W": W, "cfg.train.seed": seed, "cfg.optim.lr": 3e-3, "cfg.grid": grid,
            "method_label": {"pre-ln": "Pre-LN", "post-ln": "Post-LN"}[method], "params": params}


def _collection(rows, metrics=None):
    empty = pd.DataFrame(columns=["run_id", "step"])
    return Collection(runs=pd.DataFrame(rows), metrics=metrics if metrics is not None else empty,
                      evals=empty, probes=empty, lm_eval=empty, probe_files=empty, problems=empty)


BASE = {0: 100.0, 1: 104.0, 2: 97.0}  # seeds differ a lot: only pairing sees a small effect


def _arms(effect_by_seed: dict, *, method="pre-ln", schedule="linear", n_layers=8, prefix=""):
    rows = []
    for seed, base in BASE.items():
        rows.append(_run(f"{prefix}{method}-{n_layers}-none-{seed}", method=method, n_layers=n_layers, seed=seed,
                         ppl=base))
        rows.append(_run(f"{prefix}{method}-{n_layers}-{schedule}-{seed}", method=method, schedule=schedule,
                         W=48, n_layers=n_layers, seed=seed, ppl=base + effect_by_seed[seed]))
    return rows


def test_pairs_are_made_per_seed():
    pairs = analysis.pair_summary(_collection(_arms({0: -2.0, 1: -2.5, 2: -1.5})))
    assert sorted(pairs["seed"]) == [0, 1, 2]
    assert pairs.set_index("seed")["ppl_diff"].to_dict() == pytest.approx({0: -2.0, 1: -2.5, 2: -1.5})


def test_claims_table_known_effect_none_and_contradiction():
    from paper_figures.claims import claims_data

    # 350M-sized runs (params): judged against the paper at 350M, where Post-LN gains more than Pre-LN (−0.20).
    # The effects are clear enough to hold after Holm's correction across the 6 tested rows.
    rows = (_arms({0: -2.0, 1: -2.1, 2: -1.9})                      # Pre-LN: ProRes helps by 2.0
            + _arms({0: 0.4, 1: -0.4, 2: 0.0}, method="post-ln")   # Post-LN: no effect
            + _arms({0: 1.0, 1: 1.2, 2: 0.8}, schedule="equal")[1::2]  # equal: 1.0 worse than the baseline
            + _arms({0: -1.1, 1: -0.9, 2: -1.0}, n_layers=4, prefix="d"))  # 4 layers: gain 1.0 (< 2.0 at 8)
    d = claims_data(_collection(rows))
    rows_of = lambda claim, scope=None: d[(d["claim_id"] == claim) & ((d["scope"] == scope) if scope else True)]  # noqa: E731

    pre = rows_of("prores-lowers-ppl", "Pre-LN")
    pre = pre[pre["scale"].str.contains("8L")].iloc[0]
    assert pre["n"] == 3 and pre["mean"] == pytest.approx(-2.0) and pre["lo"] <= -2.0 <= pre["hi"]
    assert pre["verdict"] == "holds"
    assert "−0.37" in pre["paper"]  # 130M: 14.30 − 14.67, from the reference table

    post = rows_of("prores-lowers-ppl", "Post-LN").iloc[0]
    assert post["mean"] == pytest.approx(0.0, abs=1e-12) and post["verdict"] == "not significant"

    gains = rows_of("post-ln-gains-most").iloc[0]
    assert gains["mean"] == pytest.approx(2.0) and gains["verdict"] == "contradicted"

    eq = rows_of("linear-beats-equal").iloc[0]
    assert eq["scope"] == "Pre-LN: linear − equal" and eq["mean"] == pytest.approx(-3.0) and eq["verdict"] == "holds"

    depth = rows_of("gain-grows-with-depth").iloc[0]
    assert depth["mean"] == pytest.approx(-1.0) and depth["verdict"] == "holds"

    assert (rows_of("linear-beats-reverse")["verdict"] == "not run").all()
    not_run = d[(d["claim_id"] == "prores-lowers-ppl") & d["scope"].isin(["DeepNorm", "Sandwich-LN"])]
    assert len(not_run) == 2 and (not_run["verdict"] == "not run").all() and (not_run["n"] == 0).all()


def test_claims_table_is_made_by_study_figures(tmp_path):
    import paper_figures

    report = paper_figures.make_all(_collection(_arms({0: -2.0, 1: -2.5, 2: -1.5})), tmp_path, only=["claims"])
    assert not report.failed and "claims" in report.made
    md = (tmp_path / "claims.md").read_text()
    assert "−2.00 ± " in md and "**holds**" in md and "**not run**" in md


def test_seed_summary_groups_runs_that_differ_only_in_seed():
    runs = pd.DataFrame(_arms({0: -2.0, 1: -2.5, 2: -1.5}))
    s = analysis.seed_summary(runs).set_index("schedule")
    assert s.loc["none", "n"] == 3 and s.loc["none", "mean"] == pytest.approx(np.mean(list(BASE.values())))
    sd = np.std(list(BASE.values()), ddof=1)
    assert s.loc["none", "half_width"] == pytest.approx(4.302653 * sd / np.sqrt(3), rel=1e-6)
    assert analysis.format_interval({"n": 3, "mean": -1.234, "half_width": 0.5}) == "−1.23 ± 0.50 (n=3)"


def test_table_2_shows_the_mean_over_seeds(tmp_path):
    from paper_figures.tables import table_2

    res = table_2(_collection(_arms({0: -2.0, 1: -2.5, 2: -1.5})), tmp_path, scales={"tiny": "130M"})
    d = res.data[(res.data["method"] == "Pre-LN") & (res.data["scale"] == "130M")].set_index("prores")
    sd = np.std(list(BASE.values()), ddof=1)
    assert d.loc[False, "ours"] == pytest.approx(np.mean(list(BASE.values())))
    assert d.loc[False, "ours_text"] == f"{np.mean(list(BASE.values())):.2f} ± {4.302653 * sd / np.sqrt(3):.2f} (n=3)"
    assert d.loc[True, "ours"] == pytest.approx(np.mean(list(BASE.values())) - 2.0)


def test_loss_curves_draw_a_band_over_seeds(tmp_path):
    from paper_figures.curves import loss_curves

    rows = _arms({0: -2.0, 1: -2.5, 2: -1.5})
    steps = np.arange(1, 41)
    metrics = pd.concat([pd.DataFrame({"run_id": r["run_id"], "step": steps,
                                       "loss": 5.0 + 0.1 * r["cfg.train.seed"] + 0.0 * steps,
                                       "grad_norm": 1.0}) for r in rows], ignore_index=True)
    res = loss_curves(_collection(rows, metrics), tmp_path, beta=0.0 + 1e-9)
    bands = res.meta["bands"]
    assert bands["group"].nunique() == 2 and (bands["n"] == 3).all()
    b = bands[bands["step"] == 40].iloc[0]
    assert b["mean"] == pytest.approx(5.1, abs=1e-6)
    assert b["half_width"] == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-4)


# ---- seeds as a grid axis ------------------------------------------------------------------------------
def test_seed_axis_shorthand(tmp_path):
    from study.grid import load_grid

    g = tmp_path / "g.yaml"
    g.write_text("base: {model: {scale: tiny}, train: {steps: 10}}\naxes:\n  method: [pre-ln]\n  seed: [0, 1, 2]\n")
    grid = load_grid(g)
    assert [c.config.train.seed for c in grid.all_cells] == [0, 1, 2]
    assert [c.axes["seed"] for c in grid.all_cells] == ["seed0", "seed1", "seed2"]
    assert len({c.run_id for c in grid.all_cells}) == 3
    assert [c.config.train.seed for c in grid.cells(["seed=1"])] == [1]


# ---- the replication and budget grids: paired by design ------------------------------------------------
def _paired_design(grid, min_seeds: int):
    """Every ProRes cell has a baseline cell equal but for prores.*, for each of >= min_seeds seeds."""
    from study import config as C

    def key(cfg, drop_prores):
        d = C.semantic_dict(cfg)
        if drop_prores:
            d.pop("prores")
        return repr(sorted((k, repr(v)) for k, v in d.items()))

    cells = grid.cells()
    baselines = {key(c.config, True) for c in cells if c.config.prores.schedule == "none"}
    seeds: dict = {}
    for c in cells:
        rest = C.semantic_dict(c.config)
        rest["train"] = {k: v for k, v in rest["train"].items() if k != "seed"}
        seeds.setdefault(repr(rest), set()).add(c.config.train.seed)
        if c.config.prores.schedule != "none":
            assert key(c.config, True) in baselines, c.run_name
    assert min(len(s) for s in seeds.values()) >= min_seeds


def test_replication_and_budget_grids_are_paired_by_seed():
    from pathlib import Path

    from study.cost import estimate
    from study.grid import load_grid

    grids = Path(__file__).resolve().parent.parent / "grids"
    rep = load_grid(grids / "cpu" / "replication.yaml")
    _paired_design(rep, 3)
    for c in rep.cells():
        if c.config.prores.schedule != "none":  # W = 12% of training, as the paper's 12k of 100k
            assert c.config.prores.W / c.config.train.steps == pytest.approx(0.12)
    for name in ("main", "depth"):
        g = load_grid(grids / "budget" / f"{name}.yaml")
        _paired_design(g, 3)
        assert all(c.config.recipe == "paper" and c.config.model.init_truncation == 3.0
                   and c.config.optim.decay_groups == "official" for c in g.cells())
        hours = sum(estimate(c)["gpu_hours"] for c in g.cells())
        assert hours <= 8 * 24  # one 8-GPU node for a day, at the estimate's MFU
        assert f"{hours:.0f} GPU-hours" in g.description.replace(",", "")  # the file states what grid show says


def test_tables_3_and_4_show_the_mean_over_seeds(tmp_path):
    """Three seeds of Pre-LN + ProRes at 1.3B with known lm-eval scores: each Table 3/4 cell is their mean ± the
    95% t half-width (n=3), Avg the mean of the per-seed ten-task averages; the one-seed baseline stays plain."""
    from paper_figures.tables import table_3, table_4
    from study.collect import collect
    from tests.synthetic_runs import PAPER_TASKS, write_run

    base = {task: 60.0 + i for i, task in enumerate(PAPER_TASKS)}  # piqa 60, ..., mmlu 69
    deltas = [0.0, 1.0, 2.5]
    root = tmp_path / "results"
    for s, dl in enumerate(deltas):
        lm = {**{t: v + dl for t, v in base.items()}, "wikitext": 20.0 + dl, "lambada_ppl": 30.0 + dl}
        write_run(root, grid="main", method="pre-ln", scale="1.3b", schedule="linear", T=2, steps=200,
                  train_seed=s, seed=s, lm_eval=lm)
    write_run(root, grid="main", method="pre-ln", scale="1.3b", steps=200, train_seed=0,
              lm_eval={"piqa": 65.0, "wikitext": 25.0, "lambada_ppl": 35.0})
    col = collect(root)
    assert col.runs["cfg.train.seed"].nunique() == 3 and len(col.runs) == 4

    mean, hw = np.mean(deltas), 4.302653 * np.std(deltas, ddof=1) / np.sqrt(3)
    cell = lambda v: f"{v + mean:.2f} ± {hw:.2f} (n=3)"  # noqa: E731
    t3 = table_3(col, tmp_path / "figs")
    d3 = t3.data.set_index(["method", "prores", "column"])
    for column, value in (("piqa", 60.0), ("siqa", 61.0), ("mmlu", 69.0), ("avg", np.mean(list(base.values())))):
        assert d3.loc[("Pre-LN", True, column), "ours"] == pytest.approx(value + mean)
        assert d3.loc[("Pre-LN", True, column), "ours_text"] == cell(value)
    assert d3.loc[("Pre-LN", False, "piqa"), "ours_text"] == "65.00"          # one seed: the plain value
    assert d3.loc[("Pre-LN", False, "piqa"), "ours"] == pytest.approx(65.0)
    assert d3.loc[("Pre-LN", False, "avg"), "ours_text"] == "—"              # nine tasks missing
    assert cell(60.0) in t3.markdown and cell(60.0) in t3.latex

    t4 = table_4(col, tmp_path / "figs")
    d4 = t4.data.set_index(["method", "prores", "column"])
    assert d4.loc[("Pre-LN", True, "wikitext"), "ours_text"] == cell(20.0)
    assert d4.loc[("Pre-LN", True, "lambada"), "ours_text"] == cell(30.0)
    assert d4.loc[("Pre-LN", True, "wikitext"), "diff"] == pytest.approx(
        20.0 + mean - d4.loc[("Pre-LN", True, "wikitext"), "paper"])
    assert d4.loc[("Pre-LN", False, "wikitext"), "ours_text"] == "25.00"
    assert d4.loc[("Pre-LN", False, "lambada"), "ours_text"] == "35.00"
    assert cell(20.0) in t4.markdown and cell(20.0) in t4.latex
