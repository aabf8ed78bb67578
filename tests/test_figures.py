"""paper_figures on the synthetic root: every figure/table is made, its files are real images/documents, and the
plotted data holds the expected series, panels, shapes and markers; tables carry the paper's numbers (from
paper_figures/reference/) next to ours. Generic checks also run on every root in ROOTS (add a fixture name,
e.g. `tiny_results_root`, or set STUDY_TEST_RESULTS_ROOT)."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

import paper_figures as pf
from study import prores
from study.cli import main
from study.collect import collect
from tests.synthetic_runs import PROBE_EVERY, STEPS, root_from_param, synthetic_root  # noqa: F401

# Roots the generic tests run on: the synthetic root, the real tiny CPU runs of conftest.py's `tiny_results_root`
# fixture when it exists (skipped otherwise), and a root named by STUDY_TEST_RESULTS_ROOT.
ROOTS = ["synthetic_root", "tiny_results_root"] + (["env"] if os.environ.get("STUDY_TEST_RESULTS_ROOT") else [])
FIGURE_NAMES = list(pf.FIGURES)
TABLE_NAMES = list(pf.TABLES)


@pytest.fixture(scope="module")
def made(synthetic_root, tmp_path_factory):  # noqa: F811
    root, man = synthetic_root
    col = collect(root)
    out = tmp_path_factory.mktemp("figures")
    report = pf.make_all(col, out)
    return col, man, report, out


@pytest.fixture(scope="module", params=ROOTS)
def any_made(request, tmp_path_factory):
    if request.param == "synthetic_root":  # made once for both kinds of tests
        col, _, report, out = request.getfixturevalue("made")
        return col, report, out
    col = collect(root_from_param(request, request.param))
    out = tmp_path_factory.mktemp("figures-any")
    return col, pf.make_all(col, out), out


# ---------------------------------------------------------------------------------------------------
# generic: whatever the root, every figure is made or skipped with a reason; files are real
# ---------------------------------------------------------------------------------------------------
def test_every_figure_made_or_skipped_with_reason(any_made):
    col, report, out = any_made
    assert not report.failed, report.failed
    assert set(report.made) | set(report.skipped) == set(pf.ALL)
    assert all(isinstance(r, str) and len(r) > 10 for r in report.skipped.values())
    assert "fig6" in report.made and set(TABLE_NAMES) <= set(report.made)   # need no runs
    for _name, files in report.made.items():
        for f in files:
            assert f.exists() and f.stat().st_size > (500 if f.suffix in (".png", ".pdf") else 100), f
            head = f.read_bytes()[:8]
            if f.suffix == ".png":
                assert head.startswith(b"\x89PNG")
            elif f.suffix == ".pdf":
                assert head.startswith(b"%PDF")
    index = (out / "index.md").read_text()
    assert all(name in index for name in report.made)


def test_plotted_data_matches_the_collection(any_made):
    col, report, _ = any_made
    runs = col.runs.set_index("run_id")
    r = report.results
    if "fig1" in r:
        d = r["fig1"].data
        assert set(d["series"]) <= set(runs["label"])
        for row in d.itertuples():
            assert runs.loc[row.run_id, "final_eval_ppl"] == pytest.approx(row.ppl)
            assert runs.loc[row.run_id, "n_layers"] == row.n_layers
    if "fig3" in r:
        d = r["fig3"].data
        for _panel, g in d.groupby("panel"):
            assert len(g) == g["step"].nunique() * g["layer"].nunique()   # a full step × layer grid
    if "loss_curves" in r:
        with_metrics = set(col.metrics["run_id"].astype(str).unique())
        assert set(r["loss_curves"].data["run_id"].astype(str)) == with_metrics
    if "stability" in r:
        div = r["stability"].meta["diverged"]
        assert set(div["run_id"]) == set(runs.index[(runs["state"] == "diverged") & (runs["n_metrics"] > 0)])


# ---------------------------------------------------------------------------------------------------
# synthetic: known answers
# ---------------------------------------------------------------------------------------------------
def test_all_made_on_the_synthetic_root(made):
    col, man, report, out = made
    assert not report.failed and not report.skipped, (report.failed, report.skipped)
    assert set(report.made) == set(pf.ALL)


def test_fig1_one_line_per_method_with_its_depths(made):
    col, man, report, _ = made
    res = report.results["fig1"]
    d = res.data
    assert set(d["series"]) == {"Pre-LN", "Pre-LN (ProRes)", "Pre-LN (ProRes-equal)", "Sandwich-LN"}
    for series, g in d.groupby("series"):
        assert sorted(g["n_layers"]) == man["depths"], series
    assert res.meta["grid"] == "depth"
    ax = res.fig.axes[0]
    assert len(ax.get_legend().get_texts()) == 4


def test_fig2_spike_scores(made):
    col, man, report, _ = made
    d = report.results["fig2"].data
    assert set(d["panel"]) == {"train loss", "gradient norm"}
    assert set(d["series"]) == {"Pre-LN", "Pre-LN (ProRes)"}
    n_in = sum(1 for s in range(1, STEPS + 1) if 0.1 <= s / STEPS <= 0.9)
    gn = d[(d["panel"] == "gradient norm")].set_index(["series", "n_layers"])["spike_score"]
    for L in man["depths"]:
        # the synthetic baselines carry 2 grad-norm spikes per 12 layers inside 10-90%; ProRes runs none
        assert gn[("Pre-LN", L)] == pytest.approx((L // 12) * 2 / n_in * 100)
        assert gn[("Pre-LN (ProRes)", L)] == 0.0
    loss = d[d["panel"] == "train loss"].set_index(["series", "n_layers"])["spike_score"]
    assert loss[("Pre-LN", 48)] > loss[("Pre-LN", 12)] > 0 == loss[("Pre-LN (ProRes)", 48)]


def test_fig3_heatmaps_steps_by_layers(made):
    col, man, report, _ = made
    res = report.results["fig3"]
    d = res.data
    assert list(d["panel"].unique()) == ["without ProRes", "with ProRes"]
    n_steps = STEPS // PROBE_EVERY + 1
    for _panel, g in d.groupby("panel"):
        grid = g.pivot(index="step", columns="layer", values="act_norm")
        assert grid.shape == (n_steps, 24)        # probe steps × layers of the 1.3B pair
    runs = col.runs.set_index("run_id")
    assert runs.loc[res.meta["prores_run_id"], "scale"] == "1.3b"
    assert runs.loc[res.meta["baseline_run_id"], "schedule"] == "none"
    # the synthetic ProRes run keeps deep-layer activations lower
    last = d[d["step"] == d["step"].max()].pivot(index="layer", columns="panel", values="act_norm")
    assert (last["with ProRes"] < last["without ProRes"]).all()
    assert len(res.fig.axes) >= 2


def test_fig4_branch_similarity(made):
    col, man, report, _ = made
    d = report.results["fig4"].data
    early = [s for s in range(0, STEPS + 1, PROBE_EVERY) if s <= 0.1 * STEPS]
    for _panel, g in d.groupby("panel"):
        assert sorted(g["step"].unique()) == early
        assert g.pivot(index="step", columns="layer", values="cosine").shape == (len(early), 24)
    assert d["cosine"].between(-1.0001, 1.0001).all()
    at = d[d["step"] == early[-1]].groupby("panel")["cosine"].mean()
    assert at["with ProRes"] > at["without ProRes"]


def test_fig5_markers_and_gap(made):
    col, man, report, _ = made
    res = report.results["fig5"]
    assert res.meta["markers"] == {"residual_warmup_end": man["fig5"]["W"],
                                   "lr_decay_start": man["fig5"]["decay_start"]}
    d = res.data
    assert set(d["panel"]) == {"train loss (EMA 0.99)", "eval loss"}
    train = d[d["panel"].str.startswith("train")]
    assert len(train) == STEPS and (train["gap"].iloc[-100:] < 0).all()
    ev = d[d["panel"] == "eval loss"]
    assert list(ev["step"]) == list(range(100, STEPS + 1, 100))
    assert col.run(res.meta["prores_run_id"])["scale"] == "7b"
    xs = {round(line.get_xdata()[0]) for ax in res.fig.axes[:2] for line in ax.get_lines()
          if len(set(line.get_xdata())) == 1}
    assert {man["fig5"]["W"], man["fig5"]["decay_start"]} <= xs


def test_fig6_every_schedule_needs_no_runs(made):
    col, man, report, out = made
    res = report.results["fig6"]
    d = res.data
    names = [s for s in prores.SCHEDULES if s != "none"]
    assert sorted(d["panel"].unique()) == sorted(names)
    assert d.groupby("schedule")["layer"].nunique().eq(12).all()
    lin = d[(d["schedule"] == "linear") & (d["layer"] == 12)].set_index("step")["alpha"]
    assert lin[6000.0] == pytest.approx(0.5) and lin[12000.0] == pytest.approx(1.0)
    assert (out / "fig6_schedules.png").stat().st_size > 1000
    assert sum(ax.get_visible() for ax in res.fig.axes) >= len(names)


def test_loss_curves_and_stability(made):
    col, man, report, _ = made
    lc = report.results["loss_curves"]
    assert set(lc.data["panel"]) == set(col.runs["grid"])
    st = report.results["stability"]
    div = st.meta["diverged"]
    name_to_id = col.runs.set_index("run_name")["run_id"]
    assert list(div["run_id"]) == [name_to_id[man["diverged"]]]
    assert div["step"].iloc[0] == man["diverged_step"] and np.isfinite(div["grad_norm"].iloc[0])
    spikes = st.meta["spikes"]
    deep = name_to_id[[n for k, n in man["runs"].items() if k == "depth/pre-ln/none/48"][0]]
    assert (spikes["run_id"] == deep).sum() == 8
    # min/max decimation keeps the spikes on the plotted line
    line = st.data[st.data["run_id"] == deep]
    assert set(spikes[spikes["run_id"] == deep]["step"]) <= set(line["step"])


# ---------------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------------
def test_table2_paper_and_ours(made):
    col, man, report, out = made
    t = report.results["table2"]
    assert "14.67" in t.markdown and "14.67" in t.latex          # paper: Pre-LN 130M
    ours = man["table2"][("Pre-LN", False, "130M")]
    assert f"{ours:.2f}" in t.markdown and f"{ours:.2f}" in t.latex
    d = t.data.set_index(["method", "prores", "scale"])
    for key, value in man["table2"].items():
        assert d.loc[key, "ours"] == pytest.approx(value)
        assert d.loc[key, "diff"] == pytest.approx(value - d.loc[key, "paper"])
    assert d.loc[("DeepNorm", True, "1.3B"), "ours_text"] == "—" and "—" in t.markdown
    assert len(t.data) == len(pf.reference("table2"))
    assert (out / "table2_c4_ppl.md").read_text() == t.markdown
    assert (out / "table2_c4_ppl.tex").read_text().startswith("\\begin{table}")


def test_table3_uses_acc_norm_where_the_task_has_it(made):
    col, man, report, _ = made
    t = report.results["table3"]
    d = t.data.set_index(["method", "prores", "column"])
    want = man["table3"][("Pre-LN", True)]
    assert d.loc[("Pre-LN", True, "piqa"), "ours"] == pytest.approx(want["piqa"])          # acc_norm
    assert d.loc[("Pre-LN", True, "piqa"), "metric"] == "acc_norm"
    assert d.loc[("Pre-LN", True, "winogrande"), "metric"] == "acc"
    assert d.loc[("Pre-LN", True, "siqa"), "ours"] == pytest.approx(want["social_iqa"])
    assert d.loc[("Pre-LN", True, "lambada"), "ours"] == pytest.approx(want["lambada_openai"])
    assert d.loc[("Pre-LN", True, "avg"), "ours"] == pytest.approx(np.mean(list(want.values())))
    assert "72.85" in t.markdown and "acc_norm" in t.markdown


def test_table4_table6_table7(made):
    col, man, report, _ = made
    t4 = report.results["table4"].data.set_index(["method", "prores", "column"])
    assert t4.loc[("Pre-LN", False, "wikitext"), "ours"] == pytest.approx(man["table4"][("Pre-LN", False)]["wikitext"])
    assert t4.loc[("Pre-LN", False, "lambada"), "paper"] == pytest.approx(20.46)
    t6 = report.results["table6"]
    d6 = t6.data
    for (schedule, W, column), value in man["table6"].items():
        row = d6[(d6["schedule"] == schedule) & (d6["column"] == column)
                 & ((d6["warmup_total_steps"] == W) if W is not None else d6["warmup_total_steps"].isna())]
        assert len(row) == 1, (schedule, W, column)
        if value == "diverged":
            assert row["ours_text"].iloc[0] == "diverged" and row["paper"].iloc[0] == "diverged"
        else:
            assert row["ours"].iloc[0] == pytest.approx(value)
    assert "19.51" in t6.markdown
    t7 = report.results["table7"].data.set_index(["method", "prores", "scale"])
    for key, value in man["table7"].items():
        assert t7.loc[key, "ours"] == pytest.approx(value)
    # ClimbMix runs never fill Table 2
    t2_ids = set(report.results["table2"].data["run_id"].dropna())
    assert not t2_ids & set(report.results["table7"].data["run_id"].dropna())


def test_scale_map_lays_other_scales_out(made, tmp_path):
    col, man, report, _ = made
    t = pf.table_2(col, tmp_path, scales={"71m": "130M"})
    d = t.data.set_index(["method", "prores", "scale"])
    assert d.loc[("Sandwich-LN", False, "130M"), "ours"] == pytest.approx(20.0)   # the 71M depth run


# ---------------------------------------------------------------------------------------------------
# make / CLI
# ---------------------------------------------------------------------------------------------------
def test_skips_with_reasons_on_a_root_without_depth_runs(synthetic_root, tmp_path, capsys):  # noqa: F811
    root, man = synthetic_root
    small = tmp_path / "results"
    for grid in ("main", "7b"):
        shutil.copytree(root / grid, small / grid)
    out = tmp_path / "figs"
    assert main(["figures", str(small), "--out", str(out), "--only", "fig1,fig2,table2,table7"]) == 0
    text = capsys.readouterr().out
    assert "skipped  fig1" in text and "skipped  fig2" in text
    assert "two or more depths" in text
    assert "made     table2" in text and "made     table7" in text
    assert (out / "table2_c4_ppl.md").exists() and (out / "index.md").exists()
    assert "Skipped" in (out / "index.md").read_text()


def test_figures_command_on_a_saved_collection_and_bad_names(made, tmp_path, capsys):
    col, man, report, _ = made
    saved = col.save(tmp_path / "collected.parquet")
    assert main(["figures", str(saved), "--only", "table7", "--scale-map", "71m=130M"]) == 0
    assert (tmp_path / "figures" / "table7_climbmix_ppl.md").exists()
    capsys.readouterr()
    assert main(["figures", str(saved), "--only", "fig9"]) == 2
    assert "unknown figure/table" in capsys.readouterr().err
    assert pf.canonical_name("Figure 1") == "fig1" and pf.canonical_name("table_2") == "table2"


def test_make_returns_skipped_and_empty_collection(tmp_path):
    (tmp_path / "empty").mkdir()
    col = collect(tmp_path / "empty")
    res = pf.make("fig1", col, tmp_path / "o")
    assert isinstance(res, pf.Skipped) and res.reason
    report = pf.make_all(col, tmp_path / "o")
    assert not report.failed
    assert set(report.made) == {"fig6"} | set(TABLE_NAMES)
    assert all(math.isnan(v) for v in report.results["table2"].data["ours"])


def test_the_paper_main_root_fills_every_cell_of_tables_2_3_and_4(tmp_path):
    """tests/synthetic_runs.write_paper_main_root (benchmarks/figures_memory.py's root) has grids/paper/main.yaml's
    shape: every cell of Tables 2, 3 and 4 filled, 2% above Table 2's perplexities."""
    from tests.synthetic_runs import write_paper_main_root

    assert write_paper_main_root(tmp_path, steps=1000) == 42
    col = collect(tmp_path)
    t2 = pf.table_2(col, tmp_path / "out")
    assert t2.meta["cells_with_ours"] == t2.meta["cells"] == 42
    assert np.allclose(t2.data["ours"], t2.data["paper"] * 1.02)
    for table in (pf.table_3, pf.table_4):
        t = table(col, tmp_path / "out")
        assert t.meta["cells_with_ours"] == t.meta["cells"] > 0, t.name
