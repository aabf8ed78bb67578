"""The claims table: one row per claim of the paper that the collection can test, with a seeded verdict.

Every comparison pairs runs by seed (train.seed) and reports the mean per-seed difference with a 95% paired-t
interval (study.analysis.paired_interval), n seeds, the scale it was measured at, and a verdict
(study.analysis.verdict): holds (the interval excludes 0 on the paper's side), not significant (it contains 0,
or a single seed), contradicted (it excludes 0 on the other side), not run (no pair in the collection).

Claims (the paper's evidence in brackets; its numbers come from paper_figures/reference/, copies of its tables):
  prores-lowers-ppl     ProRes (linear) lowers held-out perplexity, for each of the seven methods [Table 2]
  post-ln-gains-most    Post-LN gains more from ProRes than Pre-LN [Table 2 at 350M/1.3B, Table 6]
  linear-beats-equal    linear beats equal at the same W [Table 6]
  linear-beats-reverse  linear beats reverse at the same W [Table 6]
  gain-grows-with-depth the ProRes gain grows with depth [Figure 1]
  fewer-loss-spikes     ProRes lowers the loss spike score [Figure 2]
Differences are "ProRes side minus the other side" (perplexity or spike-score points): negative agrees with the
paper for every claim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures._common import TableResult
from study import analysis
from study.presets import METHODS

METHOD_LABELS = {name: m.label for name, m in METHODS.items()}

CLAIMS = {
    "prores-lowers-ppl": ("ProRes (linear) lowers held-out perplexity", "Table 2"),
    "post-ln-gains-most": ("Post-LN gains more from ProRes than Pre-LN", "Table 2, Table 6"),
    "linear-beats-equal": ("linear beats equal at the same W", "Table 6"),
    "linear-beats-reverse": ("linear beats reverse at the same W", "Table 6"),
    "gain-grows-with-depth": ("the ProRes gain grows with depth", "Figure 1"),
    "fewer-loss-spikes": ("ProRes lowers the loss spike score", "Figure 2"),
}
COLUMNS = ["claim_id", "claim", "paper_ref", "paper", "scope", "ours", "mean", "half_width", "lo", "hi", "n",
           "scale", "verdict", "run_ids"]
_SCOPE_KEYS = ["grid", "scale", "n_layers", "W"]  # what must match for two arms to be compared


# ---------------------------------------------------------------------------------------------------
# The paper's side
# ---------------------------------------------------------------------------------------------------
def _table2_gain(method_label: str) -> dict[str, float]:
    from paper_figures.tables import reference

    t2 = reference("table2")
    t2 = t2[t2["method"] == method_label]
    out = {}
    for scale, g in t2.groupby("scale", sort=False):
        on, off = g[g["prores"]]["ppl"], g[~g["prores"]]["ppl"]
        if len(on) and len(off):
            out[scale] = float(on.iloc[0]) - float(off.iloc[0])
    return out


def _fmt_signed(v: float) -> str:
    return f"{v:+.2f}".replace("-", "−")


def paper_text(claim_id: str, method: str | None = None) -> str:
    """What the paper reports for a claim, from the reference tables (or the figure, where numbers are unprinted)."""
    from paper_figures.tables import reference

    if claim_id == "prores-lowers-ppl":
        gains = _table2_gain(METHOD_LABELS.get(method, method or ""))
        return ", ".join(f"{s} {_fmt_signed(v)}" for s, v in gains.items()) or "not in Table 2"
    if claim_id == "post-ln-gains-most":
        post, pre = _table2_gain("Post-LN"), _table2_gain("Pre-LN")
        return "Δpost − Δpre: " + ", ".join(f"{s} {_fmt_signed(post[s] - pre[s])}" for s in post if s in pre)
    if claim_id in ("linear-beats-equal", "linear-beats-reverse"):
        other = claim_id.rsplit("-", 1)[-1]
        t6 = reference("table6")
        col = getattr(METHODS.get(method or "pre-ln"), "table_column", None)
        if col is None:
            return "not in Table 6"
        parts = []
        for w in (1000, 12000, 24000):
            lin = t6[(t6["schedule"] == "linear") & (t6["warmup_total_steps"] == w)][col]
            oth = t6[(t6["schedule"] == other) & (t6["warmup_total_steps"] == w)][col]
            if len(lin) and len(oth):
                a, b = lin.iloc[0], oth.iloc[0]
                parts.append(f"W={w // 1000}k " + (_fmt_signed(a - b) if isinstance(b, float) else f"{other} {b}"))
        return f"350M {METHOD_LABELS.get(method or 'pre-ln', method)}: " + ", ".join(parts)
    if claim_id == "gain-grows-with-depth":
        return "Pre-LN gap widens from 12 to 120 layers (71M width; numbers not printed)"
    if claim_id == "fewer-loss-spikes":
        return "lower at every depth, Pre-LN (numbers not printed)"
    raise KeyError(claim_id)


# ---------------------------------------------------------------------------------------------------
# Our side
# ---------------------------------------------------------------------------------------------------
def _scope_text(row) -> str:
    scale = row.get("scale")
    parts = [str(scale) if isinstance(scale, str) else "custom"]
    if pd.notna(row.get("n_layers")):
        parts.append(f"{int(row['n_layers'])}L")
    if pd.notna(row.get("steps")):
        parts.append(f"{int(row['steps'])} steps")
    if pd.notna(row.get("W")):
        parts.append(f"W={row['W']:g}")
    return ", ".join(parts)


def _row(claim_id: str, scope: str, paper: str, diffs: pd.DataFrame | None, scale: str,
         run_ids: list[str] | None = None) -> dict:
    claim, ref = CLAIMS[claim_id]
    stats = analysis.paired_interval(diffs["diff"] if diffs is not None and len(diffs) else [])
    return {"claim_id": claim_id, "claim": claim, "paper_ref": ref, "paper": paper, "scope": scope,
            "ours": analysis.format_interval(stats), "mean": stats["mean"], "half_width": stats["half_width"],
            "lo": stats["lo"], "hi": stats["hi"], "n": stats["n"], "scale": scale,
            "verdict": analysis.verdict(stats, "negative"), "run_ids": ",".join(run_ids or [])}


def _pairs(col) -> pd.DataFrame:
    """Per-seed ProRes/baseline pairs of completed runs, with steps and d_model for scoping."""
    pairs = analysis.pair_summary(col, states=("completed",))
    if pairs.empty:
        return pairs.assign(steps=[], d_model=[])
    runs = col.runs.set_index("run_id")
    for c in ("steps", "d_model"):
        pairs[c] = runs[c].reindex(pairs["prores_run_id"]).to_numpy() if c in runs else np.nan
    pairs["seed"] = pairs["seed"].fillna(0)
    return pairs


def _group(df: pd.DataFrame, keys: list[str]):
    keys = [k for k in keys if k in df]
    return df.groupby(keys, dropna=False, sort=False) if keys else [((), df)]


def _prores_lowers_ppl(pairs: pd.DataFrame) -> list[dict]:
    rows, seen = [], set()
    lin = pairs[pairs["schedule"] == "linear"]
    for _, g in _group(lin, ["method"] + _SCOPE_KEYS + ["steps"]):
        method = g["method"].iloc[0]
        seen.add(method)
        d = g.rename(columns={"ppl_diff": "diff"})
        rows.append(_row("prores-lowers-ppl", METHOD_LABELS.get(method, str(method)),
                         paper_text("prores-lowers-ppl", method), d, _scope_text(g.iloc[0]),
                         g["prores_run_id"].tolist() + g["baseline_run_id"].tolist()))
    order = list(METHOD_LABELS)
    rows.sort(key=lambda r: order.index(next((m for m, lab in METHOD_LABELS.items() if lab == r["scope"]),
                                              order[-1])))
    for method in METHOD_LABELS:
        if method not in seen:
            rows.append(_row("prores-lowers-ppl", METHOD_LABELS[method], paper_text("prores-lowers-ppl", method),
                             None, "—"))
    return rows


def _post_ln_gains_most(pairs: pd.DataFrame) -> list[dict]:
    rows = []
    lin = pairs[pairs["schedule"] == "linear"]
    for _, g in _group(lin, _SCOPE_KEYS + ["steps"]):
        post, pre = g[g["method"] == "post-ln"], g[g["method"] == "pre-ln"]
        if post.empty or pre.empty:
            continue
        d = analysis.paired_by_seed(post, pre, "ppl_diff")
        rows.append(_row("post-ln-gains-most", "Δ(Post-LN) − Δ(Pre-LN)", paper_text("post-ln-gains-most"), d,
                         _scope_text(g.iloc[0])))
    return rows or [_row("post-ln-gains-most", "Δ(Post-LN) − Δ(Pre-LN)", paper_text("post-ln-gains-most"),
                         None, "—")]


def _linear_beats(pairs: pd.DataFrame, other: str) -> list[dict]:
    claim_id = f"linear-beats-{other}"
    rows = []
    for _, g in _group(pairs, ["method"] + _SCOPE_KEYS + ["steps"]):
        lin, oth = g[g["schedule"] == "linear"], g[g["schedule"] == other]
        if lin.empty or oth.empty:
            continue
        method = g["method"].iloc[0]
        d = analysis.paired_by_seed(lin, oth, "ppl_prores")
        rows.append(_row(claim_id, f"{METHOD_LABELS.get(method, method)}: linear − {other}",
                         paper_text(claim_id, method), d, _scope_text(g.iloc[0]),
                         lin["prores_run_id"].tolist() + oth["prores_run_id"].tolist()))
    return rows or [_row(claim_id, f"Pre-LN: linear − {other}", paper_text(claim_id, "pre-ln"), None, "—")]


def _gain_grows_with_depth(pairs: pd.DataFrame) -> list[dict]:
    rows = []
    lin = pairs[(pairs["schedule"] == "linear") & pairs["n_layers"].notna()]
    for _, g in _group(lin, ["method", "grid", "d_model", "W", "steps"]):
        depths = sorted(g["n_layers"].unique())
        if len(depths) < 2:
            continue
        deep, shallow = g[g["n_layers"] == depths[-1]], g[g["n_layers"] == depths[0]]
        d = analysis.paired_by_seed(deep, shallow, "ppl_diff")
        method = g["method"].iloc[0]
        scope = f"{METHOD_LABELS.get(method, method)}: Δ({int(depths[-1])}L) − Δ({int(depths[0])}L)"
        rows.append(_row("gain-grows-with-depth", scope, paper_text("gain-grows-with-depth"), d,
                         _scope_text(g.iloc[0].drop(labels=["n_layers"]))))
    return rows or [_row("gain-grows-with-depth", "Pre-LN: Δ(deep) − Δ(shallow)",
                         paper_text("gain-grows-with-depth"), None, "—")]


def _fewer_loss_spikes(col, pairs: pd.DataFrame) -> list[dict]:
    rows = []
    spikes = analysis.spike_table(col).set_index("run_id")["loss_spike_score"] if len(col.metrics) else pd.Series()
    lin = pairs[pairs["schedule"] == "linear"].copy()
    if len(spikes) and len(lin):
        lin["diff"] = (spikes.reindex(lin["prores_run_id"]).to_numpy()
                       - spikes.reindex(lin["baseline_run_id"]).to_numpy())
        for _, g in _group(lin, ["method"] + _SCOPE_KEYS + ["steps"]):
            method = g["method"].iloc[0]
            rows.append(_row("fewer-loss-spikes", f"{METHOD_LABELS.get(method, method)} (spike-score points)",
                             paper_text("fewer-loss-spikes"), g[["seed", "diff"]], _scope_text(g.iloc[0])))
    return rows or [_row("fewer-loss-spikes", "Pre-LN (spike-score points)", paper_text("fewer-loss-spikes"),
                         None, "—")]


def claims_data(col) -> pd.DataFrame:
    """One row per (claim, scope) the collection allows, plus 'not run' rows for claims it cannot test."""
    pairs = _pairs(col)
    rows = (_prores_lowers_ppl(pairs) + _post_ln_gains_most(pairs) + _linear_beats(pairs, "equal")
            + _linear_beats(pairs, "reverse") + _gain_grows_with_depth(pairs) + _fewer_loss_spikes(col, pairs))
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------
_HEAD = ["claim", "paper", "paper's Δ", "scope", "ours Δ ± 95% CI", "scale", "verdict"]
NOTE = ("Δ = ProRes side − other side, per seed (held-out perplexity; spike-score points for the spike claim); "
        "negative agrees with the paper. Interval: two-sided 95% paired t over seeds (train.seed). Verdict: holds "
        "= the interval excludes 0 below; contradicted = it excludes 0 above; not significant = it contains 0 or "
        "n = 1; not run = no such pair in the results.")


def _markdown(d: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    for r in d.itertuples():
        cells = [r.claim, r.paper_ref, r.paper, r.scope, r.ours, r.scale, f"**{r.verdict}**"]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + f"\n\n{NOTE}\n"


def _latex(d: pd.DataFrame) -> str:
    esc = lambda s: str(s).replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("−", "$-$") \
        .replace("±", r"$\pm$").replace("Δ", r"$\Delta$")  # noqa: E731
    rows = [" & ".join(esc(c) for c in (r.claim, r.paper_ref, r.scope, r.ours, r.verdict)) + r" \\"
            for r in d.itertuples()]
    return "\n".join([r"\begin{tabular}{lllll}", r"\toprule",
                      r"claim & paper & scope & ours $\Delta$ (95\% CI) & verdict \\", r"\midrule", *rows,
                      r"\bottomrule", r"\end{tabular}"]) + "\n"


def claims_table(col, out_dir, **_options) -> TableResult:
    """Make claims.md / claims.tex / claims.csv in out_dir."""
    d = claims_data(col)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, tex = _markdown(d), _latex(d)
    files = [out / "claims.md", out / "claims.tex", out / "claims.csv"]
    files[0].write_text("# The paper's claims, checked\n\n" + md)
    files[1].write_text(tex)
    d.to_csv(files[2], index=False)
    return TableResult("claims", d, md, tex, files, meta={"note": NOTE})


def verdict_lines(col) -> list[str]:
    """Plain sentences for the quickstart, one per tested 'ProRes lowers perplexity' comparison, e.g.
    'Pre-LN + ProRes vs Pre-LN: −1.2 ppl ± 3.4 (2 seeds, 95% paired t; tiny, 4L, 300 steps, W=36): not
    significant. Paper at 130M: −0.37.'"""
    d = claims_data(col)
    d = d[(d["claim_id"] == "prores-lowers-ppl") & (d["n"] > 0)]
    lines = []
    for r in d.itertuples():
        paper = _table2_gain(r.scope).get("130M")
        spread = f" ± {r.half_width:.1f}" if np.isfinite(r.half_width) else ""
        seeds = f"{r.n} seed{'s' if r.n != 1 else ''}" + (", 95% paired t" if spread else "")
        mean = f"{r.mean:+.1f}".replace("-", "−")
        text = f"{r.scope} + ProRes vs {r.scope}: {mean} ppl{spread} ({seeds}; {r.scale}): {r.verdict}."
        if paper is not None:
            text += f" Paper at 130M: {_fmt_signed(paper)}."
        lines.append(text)
    return lines
