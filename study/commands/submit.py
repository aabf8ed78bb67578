"""`study submit GRID --cluster NAME [options]`: the grid's unfinished cells as one submitit job array.

Completed and diverged cells are never resubmitted, cells with a live job are never duplicated, failed ones only
with --rerun-failed, interrupted ones are resubmitted (they resume from their checkpoint). Cluster options come
from the command line, else a YAML profile (--profile), else the grid's `cluster:` section; their flags are made
from study.clusters.options.ClusterOptions, the cluster names from study.clusters.BACKENDS.
"""

from __future__ import annotations

import sys

from study.clusters.options import FLAGS, add_flags


def register(sub) -> None:
    p = sub.add_parser("submit", help="submit a grid's unfinished cells as one job array (submitit)")
    p.add_argument("grid", help="grid file (or a name under grids/)")
    add_flags(p, ["cluster"], help={"cluster": "where the jobs run (default: the profile's or grid's `cluster`)"})
    p.add_argument("--profile", default=None, metavar="FILE.yaml",
                   help="cluster profile (YAML of the options below; a name looks under grids/profiles/)")
    g = p.add_argument_group("cluster options (command line > --profile > the grid's `cluster:` section)")
    add_flags(g, [n for n in FLAGS if n not in ("cluster", "logs")])
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only cells matching (axis or config key; repeatable)")
    p.add_argument("--only", action="append", default=[], metavar="ID_OR_NAME",
                   help="only these run ids / names (repeatable)")
    p.add_argument("--out", default="results", help="results root (default: ./results)")
    add_flags(p, ["logs"])
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted; submit nothing")
    p.add_argument("--rerun-failed", action="store_true",
                   help="also resubmit failed runs, those whose trainer recorded an error (and runs recorded "
                        "running whose job cannot be confirmed). Runs whose job or process died without "
                        "recording an error (OOM kill, node failure, cancelled) read 'interrupted' or 'pending' "
                        "and are resubmitted without it")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.clusters import BACKENDS
    from study.dispatch import load_profile, resolve_options, submit_grid
    from study.errors import ConfigError
    from study.grid import load_grid

    grid = load_grid(args.grid)
    cli = {k: getattr(args, k) for k in FLAGS}
    options = resolve_options(cli, load_profile(args.profile), grid.cluster, grid_source=str(grid.path))
    cluster = options.get("cluster")
    if cluster is None:
        raise ConfigError(f"no cluster given: pass --cluster {'|'.join(BACKENDS)} (or set `cluster` in the profile "
                          "or the grid's cluster section)", key="--cluster")
    lead_lines = _check_checkpoint_lead(grid, options, cluster, args)
    argv = ["study", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("study") else list(sys.argv)
    report = submit_grid(grid, root=args.out, cluster=cluster, options=options, where=args.where,
                         only=args.only, logs=options.get("logs"), dry_run=args.dry_run,
                         rerun_failed=args.rerun_failed, argv=argv, notes=lead_lines)
    if any(s == "failed" for s in report.results.values()):  # jobs run in this process (debug)
        return 1
    return 0


def _check_checkpoint_lead(grid, options: dict, cluster: str, args) -> list[str]:
    """The largest checkpoint of the selected cells against the signal lead (study.cost.checkpoint_plan): one
    line, a warning when the lead is short at the bandwidth we plan with (the lines to print with the plan), a
    refusal when it is short even at a fast one. The lead is the backend's default unless given (the local
    executor has none)."""
    from study.clusters import backend
    from study.cost import checkpoint_lines, checkpoint_plan, suggested_lead
    from study.errors import ConfigError

    lead = options.get("signal_delay_s")
    if lead is None:
        lead = backend(cluster).signal_delay_s  # the default lead of a backend that sends the signal
    cells = grid.select(args.where, args.only)
    if lead is None or not cells:
        return []
    nodes = int(options.get("nodes") or 1)
    world = nodes * int(options.get("tasks_per_node") or 1)
    plans = [checkpoint_plan(c.config, world_size=world, nodes=nodes, lead_s=lead) for c in cells]
    worst = max(plans, key=lambda p: p["lead_needed_s"])
    if worst["verdict"] == "refuse":
        raise ConfigError(f"--signal-delay-s {lead} cannot fit a checkpoint of {worst['bytes'] / 1e9:.1f} GB "
                          f"({worst['bytes_per_node'] / 1e9:.1f} GB per node, twice if a save is in flight) even "
                          f"at 2 GB/s per node; give it {suggested_lead(worst)} s or more", key="--signal-delay-s")
    return checkpoint_lines(worst)
