"""Rendering of the paper tables: a tidy table (one row per paper cell: keys, column, paper, ours, ours_text, diff)
as a wide table of strings, and that as Markdown and LaTeX files beside its CSV (paper_figures.tables fills them).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from paper_figures._common import TableResult

EMPTY = "—"  # a cell without a value


def fmt(v, digits=2, signed=False) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return EMPTY
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def wide(tidy: pd.DataFrame, row_keys: list[tuple[str, str]], columns: list[str], col_names: dict | None,
             digits=2) -> pd.DataFrame:
    """Wide table of strings: row keys, then for each column: '<col> paper', '<col> ours', '<col> Δ'."""
    col_names = col_names or {}
    keys = [k for k, _ in row_keys]
    out_rows = []
    for key_vals, g in tidy.groupby(keys, sort=False, dropna=False):
        key_vals = key_vals if isinstance(key_vals, tuple) else (key_vals,)
        row = {}
        for (k, header), v in zip(row_keys, key_vals, strict=True):
            if k == "prores":
                v = "yes" if v else "no"
            elif isinstance(v, float):
                v = EMPTY if not math.isfinite(v) else f"{v:g}"
            row[header] = str(v)
        cells = g.set_index("column")
        for c in columns:
            name = col_names.get(c, c)
            if c not in cells.index:
                row[f"{name} paper"] = row[f"{name} ours"] = row[f"{name} Δ"] = EMPTY
                continue
            cell = cells.loc[c]
            row[f"{name} paper"] = fmt(cell["paper"], digits)
            row[f"{name} ours"] = cell["ours_text"]
            row[f"{name} Δ"] = fmt(cell["diff"], digits, signed=True)
        out_rows.append(row)
    return pd.DataFrame(out_rows)


def to_markdown(display: pd.DataFrame, title: str, notes: list[str]) -> str:
    head = "| " + " | ".join(display.columns) + " |"
    sep = "|" + "|".join(":---" if i < 2 else "---:" for i in range(len(display.columns))) + "|"
    body = ["| " + " | ".join(str(v) for v in r) + " |" for r in display.itertuples(index=False)]
    return "\n".join([f"### {title}", "", head, sep, *body, "", *[f"- {n}" for n in notes], ""])


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in str(text))
    return out.replace("Δ", r"$\Delta$").replace(EMPTY, "--").replace("·", r"$\cdot$").replace("−", "-")


def to_latex(display: pd.DataFrame, title: str, notes: list[str], label: str) -> str:
    n = len(display.columns)
    spec = "l" * min(2, n) + "r" * max(0, n - 2)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{tex_escape(title)}. {tex_escape(' '.join(notes))}}}", rf"\label{{tab:{label}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(tex_escape(c) for c in display.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(v) for v in r) + r" \\" for r in display.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write(name: str, stem: str, tidy: pd.DataFrame, display: pd.DataFrame, title: str, notes: list[str],
           out_dir, meta: dict) -> TableResult:
    md, tex = to_markdown(display, title, notes), to_latex(display, title, notes, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.csv"]
    files[0].write_text(md)
    files[1].write_text(tex)
    tidy.to_csv(files[2], index=False)
    n = int(tidy["ours_text"].ne(EMPTY).sum())
    return TableResult(name, tidy, md, tex, files, {**meta, "cells": len(tidy), "cells_with_ours": n,
                                                    "display": display, "notes": notes})


def common_notes(n_filled: int, n_cells: int) -> list[str]:
    return [f"paper: the number printed in the paper; ours: our run ({n_filled} of {n_cells} cells reproduced, "
            f"{EMPTY} = no run yet); Δ = ours − paper."]
