"""The paper's side of each claim: its printed numbers, the sign it predicts at a scale, and its relative size.

A claims-table row is judged against the paper at one scale: the paper scale nearest to ours by parameter count
(log distance; 130M for every model under 200M parameters), or the one --scale-map names, or our own scale where
the paper trained it. Table 2 gives ProRes's gain per method at 130M / 350M / 1.3B, Table 6 the schedule
ablation at 350M (its W nearest to ours as a fraction of training, the paper's being of 60k steps). Figures 1
and 2 print no numbers: the depth and spike claims take the sign the paper's text states and have no size.

An Effect's `terms` say how to move the paper's effect to another perplexity level (what `study plan` does):
the effect there is the sum over terms of sign × relative Δ × that level's reference perplexity, relative Δ
being the paper's Δ divided by the paper's perplexity of the arm it is measured against (the baseline, or
the other schedule). "Post-LN gains more" has two terms, one per method.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CLAIMS = {
    "prores-lowers-ppl": ("ProRes (linear) lowers held-out perplexity", "Table 2"),
    "post-ln-gains-most": ("Post-LN gains more from ProRes than Pre-LN", "Table 2, Table 6"),
    "linear-beats-equal": ("linear beats equal at the same W", "Table 6"),
    "linear-beats-reverse": ("linear beats reverse at the same W", "Table 6"),
    "gain-grows-with-depth": ("the ProRes gain grows with depth", "Figure 1"),
    "fewer-loss-spikes": ("ProRes lowers the loss spike score", "Figure 2"),
}
TABLE6_WARMUPS = (1000, 12000, 24000)  # the W of Table 6 where every schedule has a number


@dataclass(frozen=True)
class Effect:
    """What the paper predicts for one row: the sign, at which scale, how large (None where unprinted)."""

    expect: str                 # 'negative' or 'positive': the sign of ours that agrees with the paper
    scale: str | None           # the paper's scale the row is judged at ('130M'); None for the figures' claims
    value: float | None         # the paper's Δ there (perplexity points)
    terms: tuple = ()           # ((sign, relative Δ), ...): see the module docstring
    why: str = ""               # how the scale was chosen, or where the sign comes from

    @property
    def text(self) -> str:
        side = "< 0" if self.expect == "negative" else "> 0"
        if self.value is None:
            return f"{side} ({self.why})"
        return f"{side} (paper {self.scale}: {signed(self.value)}; {self.why})"


def signed(v: float) -> str:
    return f"{v:+.2f}".replace("-", "−")


def _reference(name: str):
    from paper_figures.tables import reference  # tables imports claims' neighbours: read it when needed

    return reference(name)


def table6_column(method_label: str) -> str | None:
    """Table 6's column of a method label ('Post-LN' -> 'post_ln'); None for a method Table 6 does not have."""
    from paper_figures.tables import TABLE6_COLUMNS

    return next((col for col, lab in TABLE6_COLUMNS.items() if lab == method_label), None)


def table2_methods() -> list[str]:
    """The seven methods in Table 2's order (their labels)."""
    return list(dict.fromkeys(_reference("table2")["method"]))


def table2_gain(method_label: str) -> dict[str, tuple[float, float]]:
    """scale -> (Δ = ProRes − baseline perplexity, baseline perplexity) of a method in Table 2."""
    t2 = _reference("table2")
    t2 = t2[t2["method"] == method_label]
    out = {}
    for scale, g in t2.groupby("scale", sort=False):
        on, off = g[g["prores"]]["ppl"], g[~g["prores"]]["ppl"]
        if len(on) and len(off):
            out[scale] = (float(on.iloc[0]) - float(off.iloc[0]), float(off.iloc[0]))
    return out


def label_params(label: str) -> float:
    """The parameter count a paper scale's name says: '130M' -> 1.3e8, '1.3B' -> 1.3e9."""
    m = re.fullmatch(r"([\d.]+)([MB])", label)
    if not m:
        raise ValueError(f"not a paper scale name: {label!r}")
    return float(m.group(1)) * (1e6 if m.group(2) == "M" else 1e9)


def paper_scale(candidates, *, params=None, scale=None, scales: dict | None = None) -> tuple[str, str]:
    """(paper scale, why) for a row measured at our `scale` with `params` parameters: the scale map's entry when it
    names one of the candidates, else the candidate nearest in log parameter count."""
    candidates = list(candidates)
    mapped = (scales or {}).get(scale) if isinstance(scale, str) else None
    if mapped in candidates:
        return mapped, "scale map"
    if params is None and scale is None:
        return candidates[0], "no run"
    if params is None or not (isinstance(params, (int, float)) and math.isfinite(params) and params > 0):
        return candidates[0], "parameter count unknown"
    best = min(candidates, key=lambda c: abs(math.log(label_params(c) / params)))
    return best, "nearest by parameters"


def _table2_effect(method_label, where) -> Effect:
    gains = table2_gain(method_label)
    if not gains:
        return Effect("negative", None, None, why=f"{method_label} is not in Table 2")
    scale, why = paper_scale(gains, **where)
    delta, base = gains[scale]
    return Effect("negative" if delta < 0 else "positive", scale, delta, ((1, delta / base),), why)


def _post_vs_pre(where) -> Effect:
    post, pre = table2_gain("Post-LN"), table2_gain("Pre-LN")
    scale, why = paper_scale([s for s in post if s in pre], **where)
    (dp, bp), (dq, bq) = post[scale], pre[scale]
    value = dp - dq
    return Effect("negative" if value < 0 else "positive", scale, value, ((1, dp / bp), (-1, dq / bq)), why)


def _linear_vs(other: str, method_label: str, w_fraction) -> Effect:
    from paper_figures.tables import TABLE6_STEPS

    col = table6_column(method_label)
    if col is None:
        return Effect("negative", None, None, why=f"{method_label} is not in Table 6")
    w = TABLE6_WARMUPS[1]
    if isinstance(w_fraction, float) and w_fraction > 0:
        w = min(TABLE6_WARMUPS, key=lambda x: abs(math.log(x / TABLE6_STEPS / w_fraction)))
    t6 = _reference("table6")
    lin = t6[(t6["schedule"] == "linear") & (t6["warmup_total_steps"] == w)][col].iloc[0]
    oth = t6[(t6["schedule"] == other) & (t6["warmup_total_steps"] == w)][col].iloc[0]
    why = f"W={w // 1000}k of {TABLE6_STEPS // 1000}k, nearest to ours as a fraction"
    if not isinstance(oth, float):  # 'diverged': linear is better, by no printed amount
        return Effect("negative", "350M", None, why=f"paper 350M {why}: {other} {oth}")
    return Effect("negative" if lin < oth else "positive", "350M", lin - oth, ((1, (lin - oth) / oth),), why)


def effect(claim_id: str, *, method_label: str = "Pre-LN", params=None, scale=None, scales: dict | None = None,
           w_fraction=None) -> Effect:
    """The paper's prediction for a row of `claim_id` measured at our scale (params, scale; scales = the scale map)
    and, for the schedule claims, our W as a fraction of training."""
    where = {"params": params, "scale": scale, "scales": scales}
    if claim_id == "prores-lowers-ppl":
        return _table2_effect(method_label, where)
    if claim_id == "post-ln-gains-most":
        return _post_vs_pre(where)
    if claim_id in ("linear-beats-equal", "linear-beats-reverse"):
        return _linear_vs(claim_id.rsplit("-", 1)[-1], method_label, w_fraction)
    if claim_id == "gain-grows-with-depth":
        return Effect("negative", None, None, why="paper's text: the gap widens with depth; Figure 1 prints no numbers")
    if claim_id == "fewer-loss-spikes":
        return Effect("negative", None, None, why="paper's text: lower at every depth; Figure 2 prints no numbers")
    raise KeyError(claim_id)


def paper_text(claim_id: str, method_label: str = "Pre-LN") -> str:
    """What the paper reports for a claim at every scale it has (the table's "paper's Δ" column)."""
    if claim_id == "prores-lowers-ppl":
        gains = table2_gain(method_label)
        return ", ".join(f"{s} {signed(d)}" for s, (d, _) in gains.items()) or "not in Table 2"
    if claim_id == "post-ln-gains-most":
        post, pre = table2_gain("Post-LN"), table2_gain("Pre-LN")
        return "Δpost − Δpre: " + ", ".join(f"{s} {signed(post[s][0] - pre[s][0])}" for s in post if s in pre)
    if claim_id in ("linear-beats-equal", "linear-beats-reverse"):
        other = claim_id.rsplit("-", 1)[-1]
        col = table6_column(method_label)
        if col is None:
            return "not in Table 6"
        t6 = _reference("table6")
        parts = []
        for w in TABLE6_WARMUPS:
            a = t6[(t6["schedule"] == "linear") & (t6["warmup_total_steps"] == w)][col].iloc[0]
            b = t6[(t6["schedule"] == other) & (t6["warmup_total_steps"] == w)][col].iloc[0]
            parts.append(f"W={w // 1000}k " + (signed(a - b) if isinstance(b, float) else f"{other} {b}"))
        return f"350M {method_label}: " + ", ".join(parts)
    if claim_id == "gain-grows-with-depth":
        return "Pre-LN gap widens from 12 to 120 layers (71M width; numbers not printed)"
    if claim_id == "fewer-loss-spikes":
        return "lower at every depth, Pre-LN (numbers not printed)"
    raise KeyError(claim_id)
