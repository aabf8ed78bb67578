"""paper_figures/curves.py reads one seed group's full curves at a time: the seed bands equal those of all runs'
curves in one frame (how they were computed before), and Collection.runs_with equals a scan of the table."""

from __future__ import annotations

import pandas as pd

from paper_figures.curves import loss_curves
from study import analysis, stats
from study.collect import collect
from tests.synthetic_runs import write_run


def _bands_from_one_frame(col, beta: float) -> pd.DataFrame:
    """The bands as computed before: every run's smoothed loss in one frame, pivoted per seed group."""
    runs = col.runs
    groups = pd.Series(analysis.seed_group_keys(runs).to_numpy(), index=runs["run_id"].astype(str).to_numpy())
    full = []
    for r in runs.itertuples():
        m = col.metrics_for(r.run_id)
        full.append(pd.DataFrame({"step": m["step"].to_numpy(), "run_id": r.run_id, "state": r.state,
                                  "loss": analysis.ema(m["loss"].to_numpy(dtype=float), beta)}))
    d = pd.concat(full, ignore_index=True)
    out = []
    for g, gd in d[d["state"] == "completed"].assign(group=lambda x: x["run_id"].map(groups)).groupby(
            "group", sort=False):
        wide = gd.pivot_table(index="step", columns="run_id", values="loss").dropna()
        if wide.shape[1] >= 2:
            out.append(pd.DataFrame({"group": g, "step": wide.index.to_numpy(), "mean": wide.mean(axis=1).to_numpy(),
                                     "half_width": stats.t_half_width(wide.std(axis=1, ddof=1).to_numpy(),
                                                                      wide.shape[1], 0.95), "n": wide.shape[1]}))
    return pd.concat(out, ignore_index=True)


def test_seed_bands_one_group_at_a_time_equal_the_all_runs_frame(tmp_path):
    for schedule, T in (("none", None), ("linear", 10)):
        for seed in range(3):
            write_run(tmp_path, grid="main", method="pre-ln", scale="130m", schedule=schedule, T=T, steps=300,
                      seed=10 * seed + (T or 0), train_seed=seed)
    write_run(tmp_path, grid="main", method="post-ln", scale="130m", steps=300, state="running", upto=150)
    col = collect(tmp_path)
    bands = loss_curves(col, tmp_path / "out").meta["bands"]
    assert bands["group"].nunique() == 2 and (bands["n"] == 3).all() and len(bands) == 2 * 300
    want = _bands_from_one_frame(col, 0.99)
    pd.testing.assert_frame_equal(bands.drop(columns="series"), want, check_dtype=False)
    thinned = loss_curves(col, tmp_path / "out", max_points=50).meta["bands"]  # every 6th step of each group
    pd.testing.assert_frame_equal(thinned, bands[bands["step"] % 6 == 1].reset_index(drop=True))
    for table in ("metrics", "evals", "probes", "probe_files"):
        df = getattr(col, table)
        assert col.runs_with(table) == (set(df["run_id"].astype(str).unique()) if len(df) else set())
