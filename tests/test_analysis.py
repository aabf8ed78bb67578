"""study.analysis on synthetic series with known answers: spike score, EMA, loss gap, pairing, tables, probes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from study import analysis


def n_in_range(n, start=0.1, end=0.9):
    frac = np.arange(n) / (n - 1)
    return int(((frac >= start) & (frac <= end)).sum())


# ---------------------------------------------------------------------------------------------------
# spike score
# ---------------------------------------------------------------------------------------------------
def test_flat_series_with_three_spikes():
    n = 10_000
    x = np.full(n, 2.0)
    x[[2000, 5000, 8000]] += 10.0
    assert analysis.spike_score(x) == pytest.approx(3 / n_in_range(n) * 100)
    assert analysis.spike_mask(x).sum() == 3


def test_noisy_series_with_spikes_and_outside_range():
    rng = np.random.default_rng(0)
    n = 10_000
    x = rng.normal(0, 1, n)
    x[[3000, 3100, 7000]] += 20.0   # two close together: the second still counts (window holds one spike)
    x[200] += 20.0                   # at 2% of training: outside [0.1, 0.9]
    assert analysis.spike_score(x) == pytest.approx(3 / n_in_range(n) * 100)
    # the range parameters move it in and out
    assert analysis.spike_score(x, start=0.0) == pytest.approx(4 / n_in_range(n, 0.0) * 100)
    assert analysis.spike_score(x, start=0.5) == pytest.approx(1 / n_in_range(n, 0.5) * 100)
    assert analysis.spike_score(x, end=0.5) == pytest.approx(2 / n_in_range(n, 0.1, 0.5) * 100)
    # negative excursions count too ("at least 7 standard deviations from")
    x[6000] -= 20.0
    assert analysis.spike_score(x) == pytest.approx(4 / n_in_range(n) * 100)


def test_threshold_changes_the_count():
    n = 4000
    x = np.tile([1.0, -1.0], n // 2)  # mean 0, sigma 1
    x[[1000, 2000, 3000]] = 5.0      # 5 sigma: a spike at threshold 3, not at 7
    assert analysis.spike_score(x, threshold=7.0) == 0.0
    assert analysis.spike_score(x, threshold=3.0) == pytest.approx(3 / n_in_range(n) * 100)


def test_window_changes_the_count():
    n = 20_000
    x = np.zeros(n)
    spikes = np.arange(5, n, 10)     # a spike every 10 values
    x[spikes] = 1.0
    in_range = (spikes / (n - 1) >= 0.1) & (spikes / (n - 1) <= 0.9)
    # window 5 never sees the previous spike: flat history, every spike counts
    assert analysis.spike_score(x, window=5) == pytest.approx(in_range.sum() / n_in_range(n) * 100)
    # window 1000 holds 100 spikes: sigma 0.3, a spike is 3 sigma away: none counts
    assert analysis.spike_score(x, window=1000) == 0.0


def test_steps_and_total_steps_judge_a_partial_run_by_its_steps():
    steps = np.arange(1, 501)         # a run stopped at step 500 of 1000
    x = np.full(500, 3.0)
    x[299] = 9.0                      # step 300
    x[49] = 9.0                       # step 50: before 10% of 1000 steps
    in_range = int(((steps >= 100) & (steps <= 900)).sum())  # 401
    assert analysis.spike_score(x, steps=steps, total_steps=1000) == pytest.approx(1 / in_range * 100)


def test_nan_tail_is_ignored_and_empty_range_is_nan():
    x = np.full(1000, 1.0)
    x[500] = 4.0
    x[800:] = np.nan                  # a diverged tail
    frac = np.arange(1000) / 999
    finite_in = int(np.isfinite(x[(frac >= 0.1) & (frac <= 0.9)]).sum())
    assert analysis.spike_score(x) == pytest.approx(1 / finite_in * 100)
    assert math.isnan(analysis.spike_score([1.0, 2.0], start=0.5, end=0.4))
    assert analysis.spike_score(pd.Series(x)) == analysis.spike_score(x)


def test_auto_window():
    assert analysis.auto_window(100_000) == 1000
    assert analysis.auto_window(1200) == 120
    assert analysis.auto_window(50) == 20


# ---------------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------------
def test_ema_bias_corrected_and_raw():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    beta = 0.9
    m, zero_start = 0.0, []
    for v in x:
        m = beta * m + (1 - beta) * v
        zero_start.append(m)
    corrected = [r / (1 - beta ** (i + 1)) for i, r in enumerate(zero_start)]
    np.testing.assert_allclose(analysis.ema(x, beta), corrected)
    first_start = [1.0]
    for v in x[1:]:
        first_start.append(beta * first_start[-1] + (1 - beta) * v)
    np.testing.assert_allclose(analysis.ema(x, beta, bias_correction=False), first_start)
    np.testing.assert_allclose(analysis.ema(np.full(50, 3.0)), 3.0)   # a constant stays constant
    s = pd.Series([1.0, np.nan, 1.0], index=[10, 20, 30])
    out = analysis.ema(s)
    assert list(out.index) == [10, 20, 30] and math.isnan(out[20]) and out[30] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------
# loss gap
# ---------------------------------------------------------------------------------------------------
def test_loss_gap_aligns_by_step():
    steps = np.arange(1, 101)
    prores = pd.DataFrame({"step": steps, "loss": np.full(100, 2.9)})
    base = pd.DataFrame({"step": steps[1::2], "loss": np.full(50, 3.0)})   # logged every other step
    gap = analysis.loss_gap(prores, base)
    assert list(gap["step"]) == list(steps[1::2])
    np.testing.assert_allclose(gap["gap"], -0.1)
    # EMA of a linear trend lags: both lag the same, the gap of two parallel lines stays their offset
    trend = pd.DataFrame({"step": steps, "loss": 5 - 0.01 * steps})
    shifted = trend.assign(loss=trend["loss"] - 0.2)
    np.testing.assert_allclose(analysis.loss_gap(shifted, trend)["gap"], -0.2)
    raw = analysis.loss_gap(prores, base, beta=None)
    np.testing.assert_allclose(raw["prores"], 2.9)


def test_eval_loss_gap_common_steps_and_dataset():
    a = pd.DataFrame({"step": [100, 200, 300, 300], "dataset": ["c4", "c4", "c4", "wiki"], "loss": [3, 2.5, 2, 9]})
    b = pd.DataFrame({"step": [200, 300, 400], "dataset": ["c4", "c4", "c4"], "loss": [2.7, 2.4, 2.2]})
    gap = analysis.eval_loss_gap(a, b)
    assert list(gap["step"]) == [200, 300]
    np.testing.assert_allclose(gap["gap"], [-0.2, -0.4])
    gap = analysis.eval_loss_gap(a, b.assign(dataset="wiki"), dataset="wiki")
    assert list(gap["step"]) == [300] and gap["gap"].iloc[0] == pytest.approx(9 - 2.4)


def test_lr_decay_start():
    assert analysis.lr_decay_start({"steps": 100000, "decay_fraction": 0.1, "lr_schedule": "wsd"}) == 90000
    assert analysis.lr_decay_start({"steps": 1000, "decay_fraction": 0.1, "lr_schedule": "cosine"}) is None
    assert analysis.lr_decay_start({"steps": float("nan"), "decay_fraction": 0.1}) is None


# ---------------------------------------------------------------------------------------------------
# pairing
# ---------------------------------------------------------------------------------------------------
def _run(rid, schedule, lr, *, T=None, grid="g", name=None, log_every=10, state="completed", cfg=True):
    row = {"run_id": rid, "state": state, "schedule": schedule, "T": T, "W": None if T is None else 12 * T,
           "label": f"lbl-{rid}", "method": "pre-ln", "scale": "tiny", "n_layers": 12, "grid": grid}
    if cfg:
        row.update({"cfg.method": "pre-ln", "cfg.grid": grid, "cfg.name": name, "cfg.model.n_layers": 12,
                    "cfg.optim.lr": lr, "cfg.prores.schedule": schedule, "cfg.prores.T": T,
                    "cfg.prores.W": None if T is None else 12 * T, "cfg.train.log_every": log_every,
                    "cfg.eval.every": 100})
    return row


def test_pair_runs_differ_only_in_prores():
    runs = pd.DataFrame([
        _run("base1", "none", 1e-3),
        _run("pro1", "linear", 1e-3, T=100, grid="other", name="x", log_every=1),  # bookkeeping differs: paired
        _run("pro1eq", "equal", 1e-3, T=1200),
        _run("base2", "none", 2e-3),
        _run("pro3", "linear", 3e-3, T=100),                                     # no baseline at lr 3e-3
        _run("pro2run", "linear", 2e-3, T=100, state="running"),
    ])
    corrupt = {k: (np.nan if k.startswith("cfg.") else v) for k, v in _run("broken", "linear", 1e-3, T=100).items()}
    runs = pd.concat([runs, pd.DataFrame([corrupt])], ignore_index=True)
    pairs = analysis.pair_runs(runs)
    got = set(zip(pairs["prores_run_id"], pairs["baseline_run_id"], strict=True))
    assert got == {("pro1", "base1"), ("pro1eq", "base1"), ("pro2run", "base2")}
    done = analysis.pair_runs(runs, states=("completed",))
    got = set(zip(done["prores_run_id"], done["baseline_run_id"], strict=True))
    assert got == {("pro1", "base1"), ("pro1eq", "base1")}
    row = pairs.set_index("prores_run_id").loc["pro1"]
    assert row["schedule"] == "linear" and row["T"] == 100 and row["baseline_label"] == "lbl-base1"


def test_pair_runs_without_cfg_columns_uses_identity_columns():
    runs = pd.DataFrame([_run("b", "none", 1e-3, cfg=False), _run("p", "linear", 1e-3, T=5, cfg=False)])
    runs["lr"] = [1e-3, 1e-3]
    pairs = analysis.pair_runs(runs)
    assert list(zip(pairs["prores_run_id"], pairs["baseline_run_id"], strict=True)) == [("p", "b")]
    assert analysis.pair_runs(runs.iloc[:0]).empty


# ---------------------------------------------------------------------------------------------------
# tables and lm-eval
# ---------------------------------------------------------------------------------------------------
def test_compare_table():
    ref = pd.DataFrame({"method": ["A", "A", "B"], "scale": ["s", "m", "s"], "ppl": [10.0, 9.0, "diverged"]})
    ours = pd.DataFrame({"method": ["A", "B", "C"], "scale": ["s", "s", "s"], "ppl": [10.5, 20.0, 1.0]})
    t = analysis.compare_table(ours, ref, on=["method", "scale"])
    assert len(t) == 3 and list(t.columns) == ["method", "scale", "paper", "ours", "diff"]
    assert t.loc[0, "diff"] == pytest.approx(0.5)
    assert math.isnan(t.loc[1, "ours"]) and math.isnan(t.loc[1, "diff"])
    assert t.loc[2, "paper"] == "diverged" and math.isnan(t.loc[2, "diff"])


def test_lm_eval_scores_rule():
    lm = pd.DataFrame([
        {"run_id": "r", "task": "piqa", "metric": "acc", "filter": "none", "value": 0.70, "stderr": 0.01},
        {"run_id": "r", "task": "piqa", "metric": "acc_norm", "filter": "none", "value": 0.72, "stderr": 0.01},
        {"run_id": "r", "task": "winogrande", "metric": "acc", "filter": "none", "value": 0.55, "stderr": 0.02},
        {"run_id": "r", "task": "wikitext", "metric": "word_perplexity", "filter": "none", "value": 25.0,
         "stderr": np.nan},
    ])
    s = analysis.lm_eval_scores(lm).set_index("task")
    assert s.loc["piqa", "metric"] == "acc_norm" and s.loc["piqa", "value"] == pytest.approx(72.0)
    assert s.loc["winogrande", "metric"] == "acc" and s.loc["winogrande", "value"] == pytest.approx(55.0)
    assert "wikitext" not in s.index
    acc = analysis.lm_eval_scores(lm, rule="acc", percent=False).set_index("task")
    assert acc.loc["piqa", "value"] == pytest.approx(0.70)


# ---------------------------------------------------------------------------------------------------
# branch similarity (Figure 4)
# ---------------------------------------------------------------------------------------------------
def test_branch_similarity_known_cosines(tmp_path):
    torch = pytest.importorskip("torch")
    L, N, D = 3, 4, 6
    final = torch.randn(L, N, D)
    early = final.clone()
    early[1] = -final[1]                       # layer 2 points the other way
    early[2] = torch.zeros(L, N, D)[2]
    early[2][:, 0] = 1.0
    final2 = final.clone()
    final2[2] = 0.0
    final2[2][:, 1] = 1.0                      # layer 3: orthogonal
    files = []
    for step, t in ((0, early), (10, early), (500, final2)):
        p = tmp_path / f"step_{step:07d}.pt"
        torch.save({"step": step, "branch": t.half()}, p)
        files.append({"step": step, "path": str(p)})
    sim = analysis.branch_similarity(pd.DataFrame(files), early_fraction=0.1, total_steps=1000)
    assert sorted(sim["step"].unique()) == [0, 10]     # 500 is the final step (and past 10% of 1000)
    by_layer = sim[sim["step"] == 10].set_index("layer")["cosine"]
    assert by_layer[1] == pytest.approx(1.0, abs=1e-3)
    assert by_layer[2] == pytest.approx(-1.0, abs=1e-3)
    assert by_layer[3] == pytest.approx(0.0, abs=1e-3)


def test_open_results_collects_or_loads(tmp_path):
    from study.collect import Collection

    (tmp_path / "root").mkdir()
    col = analysis.open_results(tmp_path / "root")
    assert isinstance(col, Collection) and col.runs.empty
    col.save(tmp_path / "saved.parquet")
    assert isinstance(analysis.open_results(tmp_path / "saved.parquet"), Collection)


def test_split_modules_stay_reachable_through_study_analysis():
    """study.series / study.stats / study.notebooks were split out of study.analysis; importers keep its address."""
    from study import notebooks, series, stats

    moved = {series: ["spike_score", "spike_mask", "auto_window", "ema", "loss_gap", "eval_loss_gap", "run_loss_gap",
                      "lr_decay_start"],
             stats: ["SEED_COLUMN", "VERDICTS", "t_cdf", "t_quantile", "paired_interval", "verdict", "format_interval",
                     "seed_group_keys", "seed_summary", "paired_by_seed"],
             notebooks: ["run_notebook", "inject_parameters"]}
    for mod, names in moved.items():
        for name in names:
            assert name in analysis.__all__ and getattr(analysis, name) is getattr(mod, name), name
