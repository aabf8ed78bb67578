"""Tables 2, 3, 4, 6 and 7 of the paper, each cell with our reproduced value and the difference.

The paper's numbers come from paper_figures/reference/*.csv (copies of the paper's printed tables). Each table
function returns a TableResult whose `data` is tidy (one row per paper cell: the cell's keys, paper, ours, diff,
run_id, n_candidates) and writes <name>.md, <name>.tex and <name>.csv.

How runs fill cells (the same rule everywhere):
- method: the run's method label (study.presets.METHODS[name].label, e.g. 'pre-ln-ds-init' -> 'Pre-LN (DS-Init)');
- ProRes: the paper's "+ ProRes" rows are the default `linear` schedule; baseline rows are schedule `none`; runs
  with other schedules fill only Table 6;
- scale: our scale preset through `scales` (default 130m -> 130M, 350m -> 350M, 1.3b -> 1.3B); pass e.g.
  scales={'tiny': '130M'} to lay a CPU study out in the paper's tables;
- which run: completed runs (a diverged run shows 'diverged'; running/failed/partial runs are ignored); among
  several candidates, runs of the table's preferred grid first, then the lowest perplexity (the paper reports
  each method at its best searched LR). `n_candidates` says how many runs matched. Where the picked run's
  setting (study.design: the grid axes and semantic config less train.seed) has other completed seeds, ours is
  their mean, shown as 'mean ± half-width (n=k)' with the 95% t interval over seeds (n = the seeds that have the
  cell's value; Table 3's Avg is the mean over seeds of each seed's ten-task average). Two runs for one seed of
  that setting show as 'error: 2 runs for seed s (ids ...)', never as a mean.
- ClimbMix: a run whose config mentions ClimbMix (data.*) or whose eval dataset does belongs to Table 7 only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import render
from paper_figures._common import TableResult
from paper_figures.labels import SCALE_LABELS
from paper_figures.render import EMPTY
from study import analysis, design, paper_tasks
from study.presets import METHODS

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
REFERENCE_FILES = {"table2": "table2_c4_ppl.csv", "table3": "table3_zeroshot_1.3B.csv",
                   "table4": "table4_ood_ppl_1.3B.csv", "table6": "table6_schedule_ablation_350M.csv",
                   "table7": "table7_climbmix_ppl.csv"}
DEFAULT_SCALES = {s: SCALE_LABELS[s] for s in ("130m", "350m", "1.3b")}  # the scales of the paper's tables

# Table 3 columns -> lm-eval task names (first found wins); Table 4 columns -> (names, metric): study/paper_tasks.py
TABLE3_TASKS = {t.column: t.reads for t in paper_tasks.of_table("table3")}
TABLE4_TASKS = {t.column: (t.reads, t.metric) for t in paper_tasks.of_table("table4")}
TABLE4_HEADERS = {t.column: t.header or t.column for t in paper_tasks.of_table("table4")}
TABLE3_RULE = ("Scores are lm-eval accuracies x 100: acc_norm where the task reports it, otherwise acc "
               "(the paper does not say which; both are in Collection.lm_eval). Avg = plain mean of the "
               f"{len(TABLE3_TASKS)}, shown only when all {len(TABLE3_TASKS)} are present.")
TABLE4_RULE = "; ".join(f"{TABLE4_HEADERS[c]}: lm-eval `{names[0]}` {metric}" for c, (names, metric)
                        in TABLE4_TASKS.items()) + "."


def reference(name: str) -> pd.DataFrame:
    """The paper's numbers for table `name` ('table2', ...): numbers as floats, 'diverged' kept as text,
    prores as bool."""
    df = pd.read_csv(REFERENCE_DIR / REFERENCE_FILES[name], dtype=str, keep_default_na=False)
    for c in df.columns:
        if c == "prores":
            df[c] = df[c].str.lower().eq("true")
        elif c not in ("method", "scale", "schedule"):
            num = pd.to_numeric(df[c], errors="coerce")
            if c == "warmup_total_steps" or num.notna().all():
                df[c] = num
            else:
                df[c] = [v if v == "" or v == "diverged" or not np.isfinite(n) else float(n)
                         for v, n in zip(df[c], num, strict=True)]
                df[c] = df[c].replace("", np.nan)
    return df


# ---------------------------------------------------------------------------------------------------
# Picking runs for cells
# ---------------------------------------------------------------------------------------------------
def _is_climbmix(runs: pd.DataFrame) -> pd.Series:
    cols = [c for c in runs.columns if c.startswith("cfg.data.")] + ["eval_dataset"]
    hit = pd.Series(False, index=runs.index)
    for c in cols:
        if c in runs:
            hit |= runs[c].astype(str).str.contains("climbmix", case=False, na=False)
    return hit


def _eligible(runs: pd.DataFrame, scales: dict) -> pd.DataFrame:
    df = runs[runs["state"].isin(("completed", "diverged"))].copy()
    df["paper_scale"] = df["scale"].map(lambda s: scales.get(s) if isinstance(s, str) else None)
    df = df[df["paper_scale"].notna()]
    df["paper_method"] = df["method_label"] if "method_label" in df else df["label"]
    df["climbmix"] = _is_climbmix(df)
    return df


def _pick(cands: pd.DataFrame, prefer_grid: str | None, value: str = "final_eval_ppl"):
    """(row or None, n): completed before diverged, preferred grid first, then the lowest `value`."""
    if cands.empty:
        return None, 0
    c = cands.assign(
        _done=(cands["state"] == "completed").astype(int),
        _grid=cands["grid"].astype(str).str.contains(prefer_grid, regex=True).astype(int) if prefer_grid else 0,
        _v=pd.to_numeric(cands[value], errors="coerce").fillna(np.inf))
    c = c.sort_values(["_done", "_grid", "_v"], ascending=[False, False, True])
    return c.iloc[0], len(cands)


def _ours_ppl(row) -> tuple[float, str]:
    """(value, text) of a picked run's final perplexity; 'diverged' for diverged runs (or ppl > 1000)."""
    if row is None:
        return np.nan, EMPTY
    v = row.get("final_eval_ppl")
    if row["state"] == "diverged" or (isinstance(v, float) and (not math.isfinite(v) or v > 1000)):
        return np.nan, "diverged"
    return float(v), f"{v:.2f}"


def _seed_siblings(row, cands: pd.DataFrame) -> tuple[list[str], str | None]:
    """(run ids, error) of the picked run's setting among the completed candidates (study.design: the runs equal to
    it but for train.seed, itself included); error is the setting's two runs for one seed, shown instead of a
    mean. Nothing when the picked run is not a completed one (a diverged pick stands alone)."""
    done = cands[cands["state"] == "completed"]
    if row is None or done.empty:
        return [], None
    setting = design.Design(done).setting_of(str(row["run_id"]))
    return ([], None) if setting is None else (setting.run_ids, setting.error)


def _over_seeds(values, value: float, text: str) -> tuple[float, str]:
    """(mean, 'mean ± half-width (n=k)') of per-seed values (95% t interval of the mean) when k >= 2 seeds have
    one; otherwise the picked run's own (value, text)."""
    stats = analysis.paired_interval(values)
    if stats["n"] < 2:
        return value, text
    return stats["mean"], f"{stats['mean']:.2f} ± {stats['half_width']:.2f} (n={stats['n']})"


def _seed_mean(row, cands: pd.DataFrame, value: float, text: str) -> tuple[float, str]:
    """The picked run's perplexity, or, when runs equal to it but for train.seed completed too, their mean shown
    as 'mean ± half-width (n=k)' (95% t interval of the mean over seeds); 'error: ...' for two runs of one seed."""
    if row is None or not isinstance(value, float) or not math.isfinite(value):
        return value, text
    ids, error = _seed_siblings(row, cands)
    if error:
        return np.nan, f"error: {error}"
    group = cands[cands["run_id"].astype(str).isin(ids)]
    return _over_seeds(pd.to_numeric(group["final_eval_ppl"], errors="coerce"), value, text)


def _diff(paper, ours) -> float:
    if isinstance(paper, (int, float)) and isinstance(ours, (int, float)) and math.isfinite(paper) \
            and math.isfinite(ours):
        return ours - paper
    return np.nan


def _fill(ref: pd.DataFrame, keys: list[str], value_cols: list[str], find) -> pd.DataFrame:
    """Tidy rows: for each paper row and value column, find(ref_row, column) -> (ours, ours_text, run_id, n)."""
    rows = []
    for r in ref.to_dict("records"):
        for col in value_cols:
            paper = r[col]
            ours, text, rid, n, extra = find(r, col)
            rows.append({**{k: r[k] for k in keys}, "column": col, "paper": paper, "ours": ours,
                         "ours_text": text, "diff": _diff(paper, ours), "run_id": rid, "n_candidates": n, **extra})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Tables 2 and 7: perplexity per method × ProRes × scale
# ---------------------------------------------------------------------------------------------------
def _ppl_table(name, stem, title, collection, out_dir, scales, climbmix: bool, prefer_grid):
    scales = scales or DEFAULT_SCALES
    ref = reference(name)
    runs = _eligible(collection.runs, scales)
    runs = runs[runs["climbmix"] == climbmix]
    runs = runs[runs["schedule"].isin(("none", "linear"))]

    def find(r, col):
        cands = runs[(runs["paper_method"] == r["method"]) & (runs["paper_scale"] == r["scale"])
                     & ((runs["schedule"] == "linear") == r["prores"])]
        row, n = _pick(cands, prefer_grid)
        v, text = _seed_mean(row, cands, *_ours_ppl(row))
        return v, text, None if row is None else row["run_id"], n, {}

    tidy = _fill(ref, ["method", "prores", "scale"], ["ppl"], find)
    # wide: rows method × prores, columns scales
    tidy_w = tidy.assign(column=tidy["scale"])
    scale_cols = list(dict.fromkeys(ref["scale"]))
    display = render.wide(tidy_w, [("method", "Method"), ("prores", "ProRes")], scale_cols, None)
    notes = render.common_notes(int(tidy["ours_text"].ne(EMPTY).sum()), len(tidy)) + [
        "ProRes rows: the linear schedule; our scale presets map to the paper's as " +
        ", ".join(f"{k} -> {v}" for k, v in scales.items()) + "."]
    return render.write(name, stem, tidy, display, title, notes, out_dir, {"scales": scales})


def table_2(collection, out_dir, *, scales: dict | None = None, prefer_grid: str | None = "main") -> TableResult:
    """Table 2: C4 perplexity of the seven methods ± ProRes at 130M / 350M / 1.3B (final eval ppl)."""
    return _ppl_table("table2", "table2_c4_ppl", "Table 2: C4 eval perplexity", collection, out_dir, scales,
                      False, prefer_grid)


def table_7(collection, out_dir, *, scales: dict | None = None, prefer_grid: str | None = "climbmix") -> TableResult:
    """Table 7: ClimbMix perplexity of Pre-LN ± ProRes (runs trained on ClimbMix)."""
    return _ppl_table("table7", "table7_climbmix_ppl", "Table 7: ClimbMix eval perplexity", collection, out_dir,
                      scales, True, prefer_grid)


# ---------------------------------------------------------------------------------------------------
# Tables 3 and 4: lm-eval at 1.3B
# ---------------------------------------------------------------------------------------------------
def _lm_runs(collection, scales, paper_scale):
    runs = _eligible(collection.runs, scales or DEFAULT_SCALES)
    runs = runs[(runs["paper_scale"] == paper_scale) & ~runs["climbmix"] & runs["schedule"].isin(("none", "linear"))]
    with_lm = set(collection.lm_eval["run_id"].astype(str)) if len(collection.lm_eval) else set()
    return runs[runs["run_id"].astype(str).isin(with_lm)]


def _task_value(lm_run: pd.DataFrame, names, metric=None):
    """(value, metric) of the first task in `names` present: `metric`, or acc_norm/acc by the Table 3 rule."""
    for t in names:
        d = lm_run[lm_run["task"] == t]
        if d.empty:
            continue
        if metric is None:
            s = analysis.lm_eval_scores(d, rule="acc_norm", percent=True)
            if len(s):
                return float(s["value"].iloc[0]), s["metric"].iloc[0]
        else:
            m = d[d["metric"] == metric]
            if len(m):
                return float(m.sort_values("filter", key=lambda f: f != "none")["value"].iloc[0]), metric
    return np.nan, None


def table_3(collection, out_dir, *, scales: dict | None = None, prefer_grid: str | None = "main",
            tasks: dict | None = None) -> TableResult:
    """Table 3: zero-shot accuracy (lm-eval) of the seven methods ± ProRes at 1.3B. Rule: TABLE3_RULE."""
    tasks = tasks or TABLE3_TASKS
    ref = reference("table3")
    runs = _lm_runs(collection, scales, "1.3B")
    lm = collection.lm_eval.assign(run_id=collection.lm_eval["run_id"].astype(str)) if len(collection.lm_eval) \
        else collection.lm_eval
    cols = list(tasks) + ["avg"]
    picked = {}

    def avg(lm_run):
        vals = [_task_value(lm_run, tasks[c])[0] for c in tasks]
        return float(np.mean(vals)) if all(np.isfinite(vals)) else np.nan

    def find(r, col):
        key = (r["method"], r["prores"])
        if key not in picked:
            cands = runs[(runs["paper_method"] == r["method"]) & ((runs["schedule"] == "linear") == r["prores"])]
            row, n = _pick(cands, prefer_grid)
            picked[key] = row, n, *_seed_siblings(row, cands)
        row, n, seeds, error = picked[key]
        if row is None:
            return np.nan, EMPTY, None, 0, {"metric": None}
        if error:
            return np.nan, f"error: {error}", row["run_id"], n, {"metric": None}
        lr_ = lm[lm["run_id"] == str(row["run_id"])]
        if col == "avg":
            v = avg(lr_)
            v, text = _over_seeds([avg(lm[lm["run_id"] == s]) for s in seeds], v, render.fmt(v))
            return v, text, row["run_id"], n, {"metric": "mean"}
        v, metric = _task_value(lr_, tasks[col])
        v, text = _over_seeds([_task_value(lm[lm["run_id"] == s], tasks[col])[0] for s in seeds], v, render.fmt(v))
        return v, text, row["run_id"], n, {"metric": metric}

    tidy = _fill(ref, ["method", "prores"], cols, find)
    display = render.wide(tidy, [("method", "Method"), ("prores", "ProRes")], cols, None)
    notes = render.common_notes(int(tidy["ours_text"].ne(EMPTY).sum()), len(tidy)) + [TABLE3_RULE]
    return render.write("table3", "table3_zeroshot", tidy, display, "Table 3: zero-shot accuracy at 1.3B", notes,
                  out_dir, {"rule": TABLE3_RULE})


def table_4(collection, out_dir, *, scales: dict | None = None, prefer_grid: str | None = "main") -> TableResult:
    """Table 4: out-of-distribution perplexity (WikiText, LAMBADA) at 1.3B from lm-eval. Rule: TABLE4_RULE."""
    ref = reference("table4")
    runs = _lm_runs(collection, scales, "1.3B")
    lm = collection.lm_eval.assign(run_id=collection.lm_eval["run_id"].astype(str)) if len(collection.lm_eval) \
        else collection.lm_eval

    def find(r, col):
        cands = runs[(runs["paper_method"] == r["method"]) & ((runs["schedule"] == "linear") == r["prores"])]
        row, n = _pick(cands, prefer_grid)
        if row is None:
            return np.nan, EMPTY, None, 0, {}
        names, metric = TABLE4_TASKS[col]
        v, _ = _task_value(lm[lm["run_id"] == str(row["run_id"])], names, metric)
        seeds, error = _seed_siblings(row, cands)
        if error:
            return np.nan, f"error: {error}", row["run_id"], n, {}
        v, text = _over_seeds([_task_value(lm[lm["run_id"] == s], names, metric)[0] for s in seeds], v, render.fmt(v))
        return v, text, row["run_id"], n, {}

    tidy = _fill(ref, ["method", "prores"], list(TABLE4_TASKS), find)
    display = render.wide(tidy, [("method", "Method"), ("prores", "ProRes")], list(TABLE4_TASKS),
                           TABLE4_HEADERS)
    notes = render.common_notes(int(tidy["ours_text"].ne(EMPTY).sum()), len(tidy)) + [TABLE4_RULE]
    return render.write("table4", "table4_ood_ppl", tidy, display, "Table 4: OOD perplexity at 1.3B", notes, out_dir,
                  {"rule": TABLE4_RULE})


# ---------------------------------------------------------------------------------------------------
# Table 6: schedule × W × norm at 350M
# ---------------------------------------------------------------------------------------------------
TABLE6_COLUMNS = {m.table_column: m.label for m in METHODS.values() if m.table_column}  # column -> method label
TABLE6_STEPS = 60000  # the paper's ablation: 6B tokens over 60k steps


def table_6(collection, out_dir, *, scales: dict | None = None, prefer_grid: str | None = "schedule|ablation",
            w_tolerance: float = 0.02) -> TableResult:
    """Table 6: perplexity per ProRes schedule and total warmup W, for Pre-/Post-/Sandwich-LN at 350M.

    A run fills the cell (schedule, W, column) when its method is the column's (Pre-LN, Post-LN, Sandwich-LN),
    its schedule is the row's, and its W equals the paper's W, or is the same fraction of its training steps as
    the paper's W of 60k steps (relative tolerance w_tolerance: how a shortened CPU study lines up). `none` and
    fix-* rows have no W.
    """
    ref = reference("table6")
    runs = _eligible(collection.runs, scales or DEFAULT_SCALES)
    runs = runs[(runs["paper_scale"] == "350M") & ~runs["climbmix"]]
    w_frac = pd.to_numeric(runs["W"], errors="coerce") / pd.to_numeric(runs["steps"], errors="coerce")

    def find(r, col):
        cands = runs[(runs["paper_method"] == TABLE6_COLUMNS[col]) & (runs["schedule"] == r["schedule"])]
        paper_w = r["warmup_total_steps"]
        if isinstance(paper_w, float) and math.isfinite(paper_w):
            target = paper_w / TABLE6_STEPS
            wf = w_frac.reindex(cands.index)
            w = pd.to_numeric(cands["W"], errors="coerce")
            cands = cands[((wf - target).abs() <= w_tolerance * target) | ((w - paper_w).abs() < 0.5)]
        else:
            cands = cands[pd.to_numeric(cands["W"], errors="coerce").isna()]
        row, n = _pick(cands, prefer_grid)
        v, text = _seed_mean(row, cands, *_ours_ppl(row))
        return v, text, None if row is None else row["run_id"], n, {}

    columns = [c for c in ref.columns if c in TABLE6_COLUMNS]  # in the paper's order
    tidy = _fill(ref, ["schedule", "warmup_total_steps"], columns, find)
    display = render.wide(tidy, [("schedule", "Schedule"), ("warmup_total_steps", "W")], columns, TABLE6_COLUMNS)
    notes = render.common_notes(int(tidy["ours_text"].ne(EMPTY).sum()), len(tidy)) + [
        f"W matched as steps, or as a fraction of training (paper: {TABLE6_STEPS} steps); 'diverged': ppl > 1000 "
        "or the run diverged. The paper's DeepNorm (15.71) and LNS (14.63) baselines are in its text."]
    return render.write("table6", "table6_schedule_ablation", tidy, display,
                  "Table 6: ProRes schedule and warmup length ablation at 350M", notes, out_dir, {})


def parse_scale_map(text: str | None) -> dict | None:
    """'tiny=130M,small=350M' -> {'tiny': '130M', 'small': '350M'} (merged over the defaults)."""
    if not text:
        return None
    out = dict(DEFAULT_SCALES)
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"expected OURS=PAPER (e.g. tiny=130M), got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out
