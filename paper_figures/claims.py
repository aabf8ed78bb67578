"""The claims table: one row per claim of the paper and per setting the collection has, with a corrected verdict.

Rows come from the grid's own design (study.design): a ProRes run is compared with the baseline of its setting and
seed; anything else that varies within a claim (a second LR, another length) gives its own row, never pooled
seeds; two runs for one (setting, seed) make the row an error. Claims (the paper's evidence in brackets):

  prores-lowers-ppl     ProRes (linear) − baseline perplexity, per method              [Table 2]
  post-ln-gains-most    Δ(Post-LN) − Δ(Pre-LN), Δ = ProRes − baseline                  [Table 2, Table 6]
  linear-beats-equal    linear − equal perplexity at the same W                        [Table 6]
  linear-beats-reverse  linear − reverse perplexity at the same W                      [Table 6]
  gain-grows-with-depth Δ(deepest) − Δ(shallowest) of one setting                      [Figure 1]
  fewer-loss-spikes     ProRes − baseline loss spike score                             [Figure 2]

The depth claim compares the deepest with the shallowest depth of a setting, seed by seed, under the grid's own
schedule rule (the same T, so W = T·L grows with depth; or the same W where the grid fixes W): the statistic
stays in perplexity points, needs no model of how the gain grows (linear in L or in log L), and every seed's
difference uses that seed's runs only. The intermediate depths are Figure 1's.

Statistics per row (study.stats): the mean per-seed difference with its 95% paired-t interval (unadjusted), the
two-sided paired-t p, and Holm's step-down adjustment of the p-values across the rows of this table that have
one (the family); the verdict comes from the adjusted p at alpha 0.05 and the sign the paper predicts at the
row's paper scale (paper_figures/effects.py: the nearest by parameters, or --scale-map). A row with fewer
than 3 paired seeds, or differences without variance, "cannot be tested"; "not run" has no pair at all.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import effects
from paper_figures._common import TableResult
from paper_figures.effects import CLAIMS, signed
from study import analysis, design, preregister
from study.stats import MIN_TESTED, holm, p_verdict, paired_interval, paired_test

ALPHA = 0.05
COLUMNS = ["claim_id", "claim", "paper_ref", "paper", "expects", "paper_scale", "scope", "ours", "mean", "sd",
           "half_width", "lo", "hi", "n", "t", "p", "p_holm", "family", "scale", "verdict", "registered", "notes",
           "key", "seeds", "run_ids", "base_ppl", "terms"]
_SHOWN = ("model.scale", "model.n_layers", "train.steps", "prores.W")  # what every row's scale text names


@dataclass
class Gain:
    """A ProRes setting against its baseline: the per-seed ProRes − baseline values."""

    prores: design.Setting
    base: design.Setting | None
    diffs: dict = field(default_factory=dict)  # seed -> value difference
    runs: dict = field(default_factory=dict)   # seed -> (ProRes run, baseline run)
    error: str | None = None


@dataclass
class Row:
    """One claims row before its statistics."""

    claim_id: str
    scope: str
    anchor: design.Setting | None
    effect: effects.Effect
    method: str = "Pre-LN"                          # the method label of the paper's numbers
    sides: list = field(default_factory=list)       # the settings compared
    diffs: pd.DataFrame | None = None               # seed, diff
    runs: dict = field(default_factory=dict)        # run id -> seed, of the differences used
    error: str | None = None
    base_ppl: list = field(default_factory=list)    # the reference perplexity of each effect term
    notes: list = field(default_factory=list)
    drop: tuple = ()                                # config keys the row's scale text leaves out (depth)


class _Claims:
    """Builds the rows of one collection (see the module docstring)."""

    def __init__(self, col, scales: dict | None):
        self.col, self.scales = col, scales
        self.d = design.Design(col.runs)
        self.ppl = col.runs.set_index(col.runs["run_id"].astype(str))["final_eval_ppl"].to_dict() \
            if "final_eval_ppl" in col.runs else {}

    # -- helpers --------------------------------------------------------------------------------------
    def method(self, s) -> str:
        if s is None:
            return "Pre-LN"
        return str(self.d.value(s, "method_label") or s.config.get("method") or "?")

    def schedule(self, s):
        return s.config.get("prores.schedule")

    def effect(self, claim_id: str, s, **kw) -> effects.Effect:
        return effects.effect(claim_id, method_label=self.method(s), params=self.d.value(s, "params"),
                              scale=s.config.get("model.scale"), scales=self.scales, **kw)

    def mean_ppl(self, s) -> float:
        vals = [self.ppl.get(r) for r in s.run_ids]
        vals = [float(v) for v in vals if v is not None and np.isfinite(v)]
        return float(np.mean(vals)) if vals else np.nan

    @functools.cached_property
    def ppl_gains(self) -> list[Gain]:
        return self.gains(self.ppl)

    def gains(self, values: dict, schedule: str = "linear") -> list[Gain]:
        """Every ProRes setting of `schedule` that has a baseline, with its per-seed differences in `values`."""
        base = [s for s in self.d.settings.values() if self.schedule(s) == "none"]
        out = []
        for s in self.d.settings.values():
            if self.schedule(s) != schedule:
                continue
            partners = self.d.partners(s, base, design.PRORES)
            if not partners:
                continue
            g = Gain(s, partners[0] if len(partners) == 1 else None)
            g.error = (f"{len(partners)} baseline settings match ({'; '.join(p.label for p in partners)})"
                       if len(partners) > 1 else s.error or partners[0].error)
            if g.error is None:
                for seed in set(s.runs) & set(g.base.runs):
                    a, b = s.run(seed), g.base.run(seed)
                    g.runs[seed] = (a, b)
                    g.diffs[seed] = _num(values.get(a)) - _num(values.get(b))
            out.append(g)
        return out

    def row(self, claim_id, scope, anchor, effect, sides, a: dict, b: dict | None, runs: dict, error=None,
            **kw) -> Row:
        """A row from two sides' per-seed values (a − b; b None: a already holds the differences); runs: seed ->
        the run ids behind that seed's difference."""
        r = Row(claim_id, scope, anchor, effect, method=self.method(anchor), sides=sides, error=error, **kw)
        if error is None:
            r.diffs = design.by_seed(a, b if b is not None else {k: 0.0 for k in a})
            r.diffs = r.diffs[np.isfinite(r.diffs["diff"])]
            r.runs = {rid: seed for seed in r.diffs["seed"] for rid in runs.get(seed, ())}
        for s in sides:
            r.notes += [f"{s.label or 'a run'}: seed {seed} {state} (left out)" for seed, state in s.left_out.items()]
        return r

    # -- the claims -----------------------------------------------------------------------------------
    def prores_lowers_ppl(self) -> list[Row]:
        rows = []
        for g in self.ppl_gains:
            m = self.method(g.prores)
            rows.append(self.row("prores-lowers-ppl", m, g.prores, self.effect("prores-lowers-ppl", g.prores),
                                 [g.prores] + ([g.base] if g.base else []), g.diffs, None, g.runs, g.error,
                                 base_ppl=[self.mean_ppl(g.base)] if g.base else []))
        order = effects.table2_methods()
        rows.sort(key=lambda r: order.index(r.scope) if r.scope in order else len(order))
        have = {r.scope for r in rows}
        return rows + [Row("prores-lowers-ppl", m, None, effects.effect("prores-lowers-ppl", method_label=m), m)
                       for m in order if m not in have]

    def post_ln_gains_most(self) -> list[Row]:
        gains = [g for g in self.ppl_gains if g.prores.config.get("method") in ("post-ln", "pre-ln")]
        pre = [g for g in gains if g.prores.config.get("method") == "pre-ln"]
        rows = []
        for g in (g for g in gains if g.prores.config.get("method") == "post-ln"):
            match = [h for h in pre if self.d.differ_only_in(g.prores, h.prores, design.METHOD)]
            if not match:
                continue
            h = match[0]
            error = (f"{len(match)} Pre-LN settings match" if len(match) > 1 else None) or g.error or h.error
            runs = {s: g.runs[s] + h.runs[s] for s in set(g.runs) & set(h.runs)}
            rows.append(self.row("post-ln-gains-most", "Δ(Post-LN) − Δ(Pre-LN)", g.prores,
                                 self.effect("post-ln-gains-most", g.prores), _sides(g, h), g.diffs, h.diffs, runs,
                                 error, base_ppl=[self.mean_ppl(g.base), self.mean_ppl(h.base)] if not error else []))
        return rows or [Row("post-ln-gains-most", "Δ(Post-LN) − Δ(Pre-LN)", None,
                            effects.effect("post-ln-gains-most"))]

    def linear_beats(self, other: str) -> list[Row]:
        claim_id = f"linear-beats-{other}"
        lin = [s for s in self.d.settings.values() if self.schedule(s) == "linear"]
        oth = [s for s in self.d.settings.values() if self.schedule(s) == other]
        rows = []
        for s in lin:
            match = self.d.partners(s, oth, design.SCHEDULE)
            if not match:
                continue
            t = match[0]
            error = (f"{len(match)} {other} settings match" if len(match) > 1 else None) or s.error or t.error
            a = {} if error else {k: self.ppl.get(s.run(k)) for k in s.runs}
            b = {} if error else {k: self.ppl.get(t.run(k)) for k in t.runs}
            runs = {} if error else {k: (s.run(k), t.run(k)) for k in set(s.runs) & set(t.runs)}
            steps = s.config.get("train.steps")
            w = s.config.get("prores.W")
            frac = float(w) / float(steps) if w and steps else None
            rows.append(self.row(claim_id, f"{self.method(s)}: linear − {other}", s,
                                 self.effect(claim_id, s, w_fraction=frac), [s, t], _nums(a), _nums(b), runs,
                                 error, base_ppl=[self.mean_ppl(t)]))
        return rows or [Row(claim_id, f"Pre-LN: linear − {other}", None, effects.effect(claim_id))]

    def gain_grows_with_depth(self) -> list[Row]:
        gains = [g for g in self.ppl_gains if g.prores.config.get("model.n_layers") is not None]
        groups: list[list[Gain]] = []
        for g in gains:  # settings that differ only in depth (and what follows from it) form one group
            home = next((grp for grp in groups if self.d.differ_only_in(g.prores, grp[0].prores, design.DEPTH)),
                        None)
            groups.append([g]) if home is None else home.append(g)
        rows = []
        for grp in groups:
            depth = lambda x: x.prores.config["model.n_layers"]  # noqa: E731
            depths = sorted({depth(x) for x in grp})
            if len(depths) < 2:
                continue
            deep = [x for x in grp if depth(x) == depths[-1]]
            shallow = [x for x in grp if depth(x) == depths[0]]
            g, h = deep[0], shallow[0]
            error = ("several settings at one depth" if len(deep) > 1 or len(shallow) > 1 else None) \
                or g.error or h.error
            of = "/".join(str(x) for x in depths)
            scope = f"{self.method(g.prores)}: Δ({depths[-1]}L) − Δ({depths[0]}L)" + \
                (f", deepest vs shallowest of {of}L" if len(depths) > 2 else "")
            runs = {s: g.runs[s] + h.runs[s] for s in set(g.runs) & set(h.runs)}
            rows.append(self.row("gain-grows-with-depth", scope, g.prores,
                                 self.effect("gain-grows-with-depth", g.prores), _sides(g, h), g.diffs, h.diffs,
                                 runs, error, drop=design.DEPTH.keys + design.DEPTH.derived))
        return rows or [Row("gain-grows-with-depth", "Pre-LN: Δ(deep) − Δ(shallow)", None,
                            effects.effect("gain-grows-with-depth"))]

    def fewer_loss_spikes(self) -> list[Row]:
        spikes = {}
        if len(self.col.metrics):
            t = analysis.spike_table(self.col)
            spikes = dict(zip(t["run_id"].astype(str), t["loss_spike_score"], strict=True))
        rows = []
        for g in self.gains(spikes) if spikes else []:
            rows.append(self.row("fewer-loss-spikes", f"{self.method(g.prores)} (spike-score points)", g.prores,
                                 self.effect("fewer-loss-spikes", g.prores), [g.prores] + ([g.base] if g.base else []),
                                 g.diffs, None, g.runs, g.error))
        return rows or [Row("fewer-loss-spikes", "Pre-LN (spike-score points)", None,
                            effects.effect("fewer-loss-spikes"))]

    def rows(self) -> list[Row]:
        return (self.prores_lowers_ppl() + self.post_ln_gains_most() + self.linear_beats("equal")
                + self.linear_beats("reverse") + self.gain_grows_with_depth() + self.fewer_loss_spikes())


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _nums(d: dict) -> dict:
    return {k: _num(v) for k, v in d.items()}


def _sides(g: Gain, h: Gain) -> list:
    return [x for x in (g.prores, g.base, h.prores, h.base) if x is not None]


def row_key(claim_id: str, sides) -> str:
    """A row's identity across stages: its claim and the grid axes of the settings it compares (the pilot and the
    main stage of a grid share axis labels, so their rows share keys)."""
    return claim_id + " " + json.dumps(sorted(json.dumps(s.axes, sort_keys=True, default=str) for s in sides))


def row_sides(key: str) -> list[dict]:
    """The axes of the settings a row key names (row_key's inverse)."""
    return [json.loads(a) for a in json.loads(key.split(" ", 1)[1])]


def _scale_text(d: design.Design, anchor, varying: list[str], drop) -> str:
    """'tiny, 8L, 400 steps, W=48' (from the runs table's identity columns) plus every config key that varies
    between the rows of one claim and scope (a second LR: 'lr=0.001')."""
    if anchor is None:
        return "—"
    keep = lambda k: not any(k == x or k.startswith(x + ".") for x in drop)  # noqa: E731
    scale, layers, steps, w = (d.value(anchor, c) for c in ("scale", "n_layers", "steps", "W"))
    parts = [str(scale or "custom")] if keep("model.scale") else []
    parts += [f"{layers}L"] if keep("model.n_layers") and layers is not None else []
    parts += [f"{steps} steps"] if steps is not None else []
    parts += [f"W={w:g}"] if keep("prores.W") and isinstance(w, (int, float)) else []
    parts += [f"{k.rsplit('.', 1)[-1]}={anchor.config.get(k)}" for k in varying if keep(k) and k not in _SHOWN]
    return ", ".join(parts)


def _varying(rows: list[Row]) -> dict[tuple, list[str]]:
    """(claim, scope) -> config keys whose values differ between the anchors of those rows: what tells rows of one
    scope apart (a second LR), named in each row's scale text."""
    out = {}
    for group in dict.fromkeys((r.claim_id, r.scope) for r in rows):
        anchors = [r.anchor.config for r in rows if (r.claim_id, r.scope) == group and r.anchor is not None]
        keys = sorted({k for a in anchors for k in a})
        out[group] = [k for k in keys if len({json.dumps(a.get(k), default=str) for a in anchors}) > 1]
    return out


def _verdict(error, n, why, p_holm, mean, expect, compared) -> str:
    if isinstance(error, str):
        return f"error: {error}"
    if not n:  # settings to compare but no seed with a result on both sides (diverged, failed): see the notes
        return "cannot be tested" if compared else "not run"
    if isinstance(why, str):
        return "cannot be tested"
    return p_verdict(mean, p_holm, expect, ALPHA)


def claims_data(col, *, scales: dict | None = None) -> pd.DataFrame:
    """One row per (claim, setting) the collection allows, plus 'not run' rows for claims it cannot test; the
    statistics, the Holm-adjusted verdicts and the registration of each row."""
    c = _Claims(col, scales)
    rows = c.rows()
    varying = _varying(rows)
    designs = preregister.find(col.runs.get("path", []), col.root)
    grid_of = dict(zip(col.runs["run_id"].astype(str), col.runs.get("grid", pd.Series(dtype=str)), strict=False))
    out = []
    for r in rows:
        diffs = r.diffs["diff"] if r.diffs is not None else []
        ci, test = paired_interval(diffs), paired_test(diffs)
        claim, ref = CLAIMS[r.claim_id]
        key = row_key(r.claim_id, r.sides) if r.sides else ""
        out.append({
            "claim_id": r.claim_id, "claim": claim, "paper_ref": ref, "paper": effects.paper_text(r.claim_id, r.method),
            "expects": r.effect.text, "paper_scale": r.effect.scale, "scope": r.scope,
            "ours": analysis.format_interval(ci), "mean": ci["mean"], "sd": test["sd"], "half_width": ci["half_width"],
            "lo": ci["lo"], "hi": ci["hi"], "n": ci["n"], "t": test["t"], "p": np.nan if r.error else test["p"],
            "scale": _scale_text(c.d, r.anchor, varying.get((r.claim_id, r.scope), []), r.drop),
            "registered": preregister.status(key, r.runs, [grid_of.get(x) for x in r.runs], designs) if r.runs
            else "—", "notes": "; ".join(r.notes), "key": key, "seeds": sorted(set(r.runs.values()), key=str),
            "run_ids": ",".join(r.runs), "base_ppl": r.base_ppl, "terms": list(r.effect.terms),
            "_error": r.error, "_why": test["why"], "_expect": r.effect.expect, "_compared": bool(r.sides)})
    d = pd.DataFrame(out)
    d["p_holm"] = holm(d["p"])
    d["family"] = int(d["p"].notna().sum())
    d["verdict"] = [_verdict(*v) for v in zip(d["_error"], d["n"], d["_why"], d["p_holm"], d["mean"], d["_expect"],
                                               d["_compared"], strict=True)]
    return d[COLUMNS]


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------
_HEAD = ["claim", "paper", "paper's Δ", "expects", "scope", "ours Δ ± 95% CI", "scale", "p", "p (Holm)", "verdict",
         "registered"]


def note(d: pd.DataFrame) -> str:
    m = int(d["family"].iloc[0]) if len(d) else 0
    return (f"Δ = ProRes side − other side, per seed (held-out perplexity; spike-score points for the spike claim). "
            f"Interval: two-sided 95% paired t over seeds (train.seed), per row, unadjusted. p: two-sided paired t "
            f"against 0; p (Holm): Holm's step-down adjustment across the family of this table's rows that have a "
            f"p, here m = {m}. Verdict from the adjusted p at alpha {ALPHA}: holds = the sign in 'expects' (the "
            f"paper's, at the paper scale named there); contradicted = the other sign; not significant; cannot be "
            f"tested = fewer than {MIN_TESTED} paired seeds (a side that diverged or failed is listed under 'Left "
            f"out'), or differences without variance; not run = no pair; "
            f"error = two runs for one setting and seed (or two settings that match one). Depth rows compare the "
            f"deepest with the shallowest depth of one setting, seed by seed, under the grid's own T/W rule (no "
            f"model of how the gain grows is assumed; the depths between are Figure 1's). registered: whether the "
            f"row used "
            f"exactly the runs of the grid's registered design (— = no design).")


def _fmt_p(p) -> str:
    return "—" if not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _cells(r) -> list[str]:
    return [r.claim, r.paper_ref, r.paper, r.expects, r.scope, r.ours, r.scale, _fmt_p(r.p), _fmt_p(r.p_holm),
            f"**{r.verdict}**", r.registered]


def _markdown(d: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in _cells(r)) + " |" for r in d.itertuples()]
    notes = [f"- {r.scope} ({r.scale}): {r.notes}" for r in d.itertuples() if r.notes]
    return "\n".join(lines) + f"\n\n{note(d)}\n" + ("\nLeft out:\n" + "\n".join(notes) + "\n" if notes else "")


def _latex(d: pd.DataFrame) -> str:
    esc = lambda s: str(s).replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("−", "$-$") \
        .replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("<", r"$<$").replace(">", r"$>$")  # noqa: E731
    rows = [" & ".join(esc(c) for c in (r.claim, r.scope, r.ours, _fmt_p(r.p), _fmt_p(r.p_holm), r.verdict))
            + r" \\" for r in d.itertuples()]
    return "\n".join([r"\begin{tabular}{llllll}", r"\toprule",
                      r"claim & scope & ours $\Delta$ (95\% CI) & $p$ & $p$ (Holm) & verdict \\", r"\midrule",
                      *rows, r"\bottomrule", r"\end{tabular}", "", "% " + esc(note(d))]) + "\n"


def claims_table(col, out_dir, *, scales: dict | None = None, **_options) -> TableResult:
    """Make claims.md / claims.tex / claims.csv in out_dir."""
    d = claims_data(col, scales=scales)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, tex = _markdown(d), _latex(d)
    files = [out / "claims.md", out / "claims.tex", out / "claims.csv"]
    files[0].write_text("# The paper's claims, checked\n\n" + md)
    files[1].write_text(tex)
    d.drop(columns=["base_ppl", "terms"]).to_csv(files[2], index=False)
    return TableResult("claims", d, md, tex, files, meta={"note": note(d), "family": int(d["family"].iloc[0])})


def verdict_lines(col, *, scales: dict | None = None) -> list[str]:
    """Plain sentences for the quickstart, one per tested 'ProRes lowers perplexity' row, e.g.
    'Pre-LN + ProRes vs Pre-LN (tiny, 4L, 300 steps, W=36): −1.2 ppl ± 3.4 (3 seeds, 95% paired t): not
    significant (p = 0.41, Holm 1.00 over 2 rows). Paper at 130M: −0.37.'"""
    d = claims_data(col, scales=scales)
    d = d[(d["claim_id"] == "prores-lowers-ppl") & ((d["n"] > 0) | d["verdict"].str.startswith("error"))]
    lines = []
    for r in d.itertuples():
        spread = f" ± {r.half_width:.1f}" if np.isfinite(r.half_width) else ""
        seeds = f"{r.n} seed{'s' if r.n != 1 else ''}" + (", 95% paired t" if spread else "")
        head = f"{r.scope} + ProRes vs {r.scope} ({r.scale})"
        if r.verdict.startswith("error"):
            lines.append(f"{head}: {r.verdict}.")
            continue
        why = f" (p = {_fmt_p(r.p)}, Holm {_fmt_p(r.p_holm)} over {r.family} rows)" if np.isfinite(r.p_holm) \
            else f" ({r.n} paired seed{'s' if r.n != 1 else ''}; {MIN_TESTED} needed)" if r.n < MIN_TESTED \
            else " (no variance)"
        mean = f"{r.mean:+.1f}".replace("-", "−")
        text = f"{head}: {mean} ppl{spread} ({seeds}): {r.verdict}{why}."
        gains = effects.table2_gain(r.scope)
        if r.paper_scale in gains:
            text += f" Paper at {r.paper_scale}: {signed(gains[r.paper_scale][0])}."
        lines.append(text)
    return lines
