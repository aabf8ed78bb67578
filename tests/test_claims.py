"""The claims table's statistics: raw and Holm-adjusted p, the family size, the paper's sign at the nearest scale,
"cannot be tested"; in claims.md, claims.csv and claims.tex."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paper_figures.claims import claims_table
from study import stats
from study.collect import collect
from tests.synthetic_runs import write_grid

GRID = """
name: claims-grid
base: {model: {scale: tiny}, train: {steps: 40}, recipe: cpu}
axes:
  method: [pre-ln, post-ln]
  schedule:
    - none
    - {label: linear, prores.schedule: linear, prores.W: 8}
    - {label: equal, prores.schedule: equal, prores.W: 8}
  seed: [0, 1, 2, 3]
exclude:
  - {method: post-ln, schedule: equal}
"""
# Pre-LN: a clear gain; Post-LN: a gain whose raw p (0.034) is under 0.05 but not after Holm: it is the 3rd
# smallest of m = 4 tested rows, so its p is doubled; linear vs equal: no difference (the largest p).
EFFECT = {"pre-ln": [-2.0, -2.1, -1.9, -2.0], "post-ln": [-0.3, -0.7, -0.2, -0.4]}
EQUAL_MINUS_LINEAR = [0.5, -0.5, 0.3, -0.2]


def _ppl(cell) -> float:
    cfg, s = cell.config, cell.config.train.seed
    on = cfg.prores.schedule != "none"
    equal = EQUAL_MINUS_LINEAR[s] if cfg.prores.schedule == "equal" else 0.0
    return 100.0 + 3.0 * s + (EFFECT[cfg.method][s] if on else 0.0) + equal


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    write_grid(root / "results", GRID, _ppl)
    col = collect(root / "results")
    return col, claims_table(col, root / "figures"), root / "figures"


def _row(d, claim_id, scope):
    return d[(d["claim_id"] == claim_id) & (d["scope"] == scope)].iloc[0]


def test_raw_and_holm_p_and_the_family(made):
    _, res, _ = made
    d = res.data
    post = _row(d, "prores-lowers-ppl", "Post-LN")
    raw = stats.paired_test(EFFECT["post-ln"])
    assert post["p"] == pytest.approx(raw["p"]) and raw["p"] < 0.05 and post["hi"] < 0  # its 95% CI excludes 0
    tested = d[d["p"].notna()]
    assert list(tested["scope"]) == ["Pre-LN", "Post-LN", "Δ(Post-LN) − Δ(Pre-LN)", "Pre-LN: linear − equal"]
    assert (d["family"] == 4).all()
    assert tested["p_holm"].tolist() == pytest.approx(stats.holm(tested["p"].tolist()))
    assert post["p_holm"] >= 0.05 and post["verdict"] == "not significant"   # Holm takes it back
    pre = _row(d, "prores-lowers-ppl", "Pre-LN")
    assert pre["p_holm"] < 0.05 and pre["verdict"] == "holds"


def test_the_paper_sign_at_the_nearest_scale(made, tmp_path):
    col, res, _ = made
    gains = _row(res.data, "post-ln-gains-most", "Δ(Post-LN) − Δ(Pre-LN)")
    # the tiny model (0.66M parameters) is judged at 130M, where the paper has Post-LN gaining LESS (+0.25)
    assert gains["paper_scale"] == "130M" and gains["expects"].startswith("> 0 (paper 130M: +0.25; nearest by")
    assert gains["mean"] > 0 and gains["verdict"] == "holds"
    at_350 = claims_table(col, tmp_path, scales={"tiny": "350M"}).data
    gains = _row(at_350, "post-ln-gains-most", "Δ(Post-LN) − Δ(Pre-LN)")
    assert gains["expects"].startswith("< 0 (paper 350M: −0.20; scale map") and gains["verdict"] == "contradicted"


def test_cannot_be_tested_where_it_applies(made):
    _, res, _ = made
    d = res.data
    spikes = d[d["claim_id"] == "fewer-loss-spikes"]
    assert len(spikes) == 2 and (spikes["n"] == 4).all() and (spikes["sd"] == 0).all()
    assert (spikes["verdict"] == "cannot be tested").all() and spikes["p"].isna().all()
    assert (d[d["scope"] == "DeepNorm"]["verdict"] == "not run").all()


def test_the_files_show_it(made):
    _, res, out = made
    md = (out / "claims.md").read_text()
    assert "| p | p (Holm) | verdict | registered |" in md
    post = _row(res.data, "prores-lowers-ppl", "Post-LN")
    assert f"| {post['p']:.3f} | {post['p_holm']:.3f} | **not significant** |" in md
    assert "here m = 4" in md and "Holm's step-down" in md and "**cannot be tested**" in md
    csv = pd.read_csv(out / "claims.csv")
    assert {"p", "p_holm", "family", "expects", "paper_scale", "registered"} <= set(csv.columns)
    assert csv["p_holm"].dropna().tolist() == pytest.approx(res.data["p_holm"].dropna().tolist())
    tex = (out / "claims.tex").read_text()
    assert r"$p$ (Holm)" in tex and f"{post['p_holm']:.3f}" in tex and "m = 4" in tex


def test_a_zero_variance_gain_is_not_a_holds():
    """Every seed the same nonzero difference: t would be infinite; the table says it cannot be tested."""
    t = stats.paired_test([-1.0, -1.0, -1.0])
    assert t["why"] == "no variance" and np.isnan(t["p"])


def test_a_side_that_diverged_is_left_out_and_said(tmp_path):
    """Pre-LN's ProRes run of seed 3 diverged: its row has 3 seeds and says why; every equal run diverged: the
    schedule row cannot be tested (not 'not run') and says so."""
    from study.grid import load_grid
    from tests.synthetic_runs import write_cell

    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    for c in load_grid(path).all_cells:
        diverged = (c.config.prores.schedule == "equal"
                    or (c.axes["schedule"] == "linear" and c.config.method == "pre-ln" and c.config.train.seed == 3))
        write_cell(tmp_path / "results", c, _ppl(c), state="diverged" if diverged else "completed")
    d = claims_table(collect(tmp_path / "results"), tmp_path / "figures").data
    pre = _row(d, "prores-lowers-ppl", "Pre-LN")
    assert pre["n"] == 3 and pre["mean"] == pytest.approx(np.mean(EFFECT["pre-ln"][:3]))
    assert "seed 3 diverged (left out)" in pre["notes"]
    equal = _row(d, "linear-beats-equal", "Pre-LN: linear − equal")
    assert equal["n"] == 0 and equal["verdict"] == "cannot be tested" and "seed 0 diverged" in equal["notes"]
    md = (tmp_path / "figures" / "claims.md").read_text()
    assert "Left out:" in md and "seed 3 diverged (left out)" in md
