"""`study figures RESULTS [--out DIR] [--only NAME,...] [--scale-map OURS=PAPER,...]`: the paper's figures and
tables from a results root (collected first) or a saved collection (`study collect` output).

Prints the hash of every registered design beside the runs (`study plan --register`; the claims table marks rows
computed from runs outside it), what it made and what it skipped and why (e.g. no depth-scaling runs yet). Exit
code 0 unless a figure failed with an unexpected error (1) or a name in --only is unknown (2).
"""

from __future__ import annotations

from pathlib import Path

from study.errors import ConfigError, StudyError


def register(sub) -> None:
    p = sub.add_parser("figures", help="make the paper's figures and tables from results")
    p.add_argument("results", help="results root, or a saved collection folder (e.g. ROOT/collected.parquet)")
    p.add_argument("--out", default=None, help="output folder (default: figures/ beside the results)")
    p.add_argument("--only", default=None, metavar="NAME,...",
                   help="only these (fig1..fig6, loss_curves, stability, table2, table3, table4, table6, table7, "
                        "claims)")
    p.add_argument("--scale-map", default=None, metavar="OURS=PAPER,...",
                   help="lay our scale presets out in the paper's table columns, e.g. tiny=130M,small=350M")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.extras import require_extra
    require_extra("figures", "study figures")
    import paper_figures
    from paper_figures.tables import parse_scale_map
    from study.analysis import open_results
    from study.collect import is_saved_collection

    src = Path(args.results)
    if not src.exists():
        raise StudyError(f"{src} does not exist")
    only = [n for n in (args.only or "").split(",") if n.strip()] or None
    if only:
        try:
            only = [paper_figures.canonical_name(n) for n in only]
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), key="--only") from None
    try:
        scales = parse_scale_map(args.scale_map)
    except ValueError as exc:
        raise ConfigError(str(exc), key="--scale-map") from None
    saved = is_saved_collection(src)
    out = Path(args.out) if args.out else (src.parent if saved else src) / "figures"
    col = open_results(src)
    print(f"{'loaded' if saved else 'collected'} {len(col.runs)} runs from {src}"
          + (f" ({len(col.problems)} problems: see `study collect`)" if len(col.problems) else ""))
    for line in _designs(col):
        print(line)
    report = paper_figures.make_all(col, out, only=only, scales=scales)
    print(report.summary())
    print(f"{len(report.made)} made, {len(report.skipped)} skipped, {len(report.failed)} failed; "
          f"index: {out / 'index.md'}")
    for name, tb in report.failed.items():
        print(f"--- {name} failed:\n{tb}")
    return 1 if report.failed else 0


def _designs(col) -> list[str]:
    """One line per registered design beside the runs (study/preregister.py): its hash, or that it was edited."""
    from study import preregister

    found = preregister.find(col.runs.get("path", []), col.root)
    return [f"registered design of {d.grid}: {d.short} ({d.path}, registered {d.registered})"
            + (": EDITED after registration, its rows count as unregistered" if d.altered else "")
            for d in found.values()]
