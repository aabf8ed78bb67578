"""`study grid show|validate GRID`: list a grid's cells with cost estimates and the disk they will write, or check
a grid file."""

from __future__ import annotations

import json
import textwrap

from study import config as C
from study import cost
from study import grid as grid_mod


def register(subparsers) -> None:
    p = subparsers.add_parser("grid", help="list (show) or check (validate) the cells of a grid file",
                              description="Inspect a grid file: its cells, run names, ids and estimated cost.")
    sub = p.add_subparsers(dest="grid_command", required=True)

    show = sub.add_parser("show", help="one row per cell: run name, run id, axes, params, tokens, GPU-hours, "
                                       "disk; then the grid's disk plan")
    show.add_argument("grid", help="grid file (or a name under grids/, e.g. paper/main)")
    show.add_argument("--where", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                      help="only cells whose axis (label or value) or resolved config key matches; "
                           "VALUE may list alternatives separated by commas")
    show.add_argument("--json", action="store_true", help="print a JSON list of cells (with resolved configs)")
    show.add_argument("--mfu", type=float, default=grid_mod.DEFAULT_MFU,
                      help=f"model FLOPs utilisation for the GPU-hour estimate (default {grid_mod.DEFAULT_MFU})")
    show.add_argument("--gpu-mem-gb", type=float, default=80.0,
                      help="GPU memory to check each cell's estimated peak training memory against (default 80)")
    show.add_argument("--gpus", type=int, default=None,
                      help="GPUs per run for the memory estimate (default: the grid's cluster gpus_per_node × nodes)")
    show.add_argument("--peak-tflops", type=float, default=grid_mod.DEFAULT_PEAK_FLOPS / 1e12,
                      help=f"GPU peak TFLOP/s (default {grid_mod.DEFAULT_PEAK_FLOPS / 1e12:g}, "
                           f"{grid_mod.PEAK_NOTE})")
    show.set_defaults(func=run)

    val = sub.add_parser("validate", help="check a grid file fully (every cell resolved) without running")
    val.add_argument("grid", help="grid file (or a name under grids/)")
    val.set_defaults(func=run)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.grid_command == "validate":
        return _validate(args)
    return _show(args)


def _validate(args) -> int:
    """Every cell resolved (load_grid), the grid's cluster options as `study submit` checks them, and what each
    distinct data config needs on this machine: its local files, and its token store when prepared (a store not
    prepared yet is a note: `study data prepare` comes after validating). One line per problem, exit 2."""
    from study import console
    from study.clusters.options import resolve_options
    from study.data import corpus
    from study.data.store_manifest import store_path
    from study.data.store_read import check_ready

    grid = grid_mod.load_grid(args.grid)
    resolve_options(None, None, grid.cluster, grid_source=str(grid.path))
    problems, notes, seen = [], [], set()
    for cell in grid.all_cells:
        d = cell.config.data
        key = json.dumps(C.to_dict(C.RunConfig(data=d)), sort_keys=True) + str(cell.config.model.vocab_size)
        if key in seen:
            continue
        seen.add(key)
        store = store_path(d, cell.config.model.vocab_size) if d.store else None
        if store is not None and (store / "manifest.json").exists():  # runs read the store, not the source
            problems += [f"{grid.source}: cell ({cell.describe()}): {why}" for _, why in check_ready([cell])]
            continue
        missing = corpus.missing_files(d)
        if missing:
            problems.append(f"{grid.source}: cell ({cell.describe()}): {missing}")
        if store is not None:
            notes.append(f"token store {store} not prepared yet: `study data prepare {args.grid}` before "
                         f"`study submit`")
    for line in problems:
        console.log.error("%s", line)
    if problems:
        return 2
    for line in notes:
        console.log.info("%s", line)
    print(f"{grid.source}: OK, {len(grid.all_cells)} cells")
    return 0


# (factor, suffix), largest first, and the suffix below the smallest factor
COUNT_UNITS = (((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")), "")  # parameters, tokens
BYTE_UNITS = (((1e12, " TB"), (1e9, " GB"), (1e6, " MB"), (1e3, " kB")), " B")  # decimal, as disks are sold and
# `df -H` counts: 1.61 GB = 1.61e9 bytes


def _scaled(value, units) -> str:
    """value in the largest unit it reaches, 3 significant digits ('1.61 GB', '134M'); '-' for None."""
    if value is None:
        return "-"
    scales, base = units
    for factor, suffix in scales:
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:g}{base}"


def _si(value) -> str:
    return _scaled(value, COUNT_UNITS)


def _bytes(value) -> str:
    return _scaled(value, BYTE_UNITS)


def _hours(value) -> str:
    return "-" if value is None else (f"{value:,.0f}" if value >= 100 else f"{value:.3g}")


def _show(args) -> int:
    grid = grid_mod.load_grid(args.grid)
    cells = grid.cells(args.where)
    peak = args.peak_tflops * 1e12
    world = args.gpus or max(1, int(grid.cluster.get("gpus_per_node") or 1)) * int(grid.cluster.get("nodes") or 1)
    est = [grid_mod.estimate(c, mfu=args.mfu, peak_flops=peak, world_size=world,
                             gpu_mem_bytes=args.gpu_mem_gb * 2**30) for c in cells]
    disks = [cost.disk_plan(c) for c in cells]
    stores = cost.store_disk(cells)
    if args.json:
        rows = [{
            "run_id": c.run_id, "run_name": c.run_name, "grid": c.grid, "axes": c.axes,
            "params": e["params"], "tokens": e["tokens"], "gpu_hours": e["gpu_hours"],
            "flops_per_token": e["flops_per_token"], "mfu": e["mfu"], "peak_flops": e["peak_flops"],
            "memory_per_gpu": e["memory_per_gpu"], "fits": e["fits"], "gpus": world, "disk": disk,
            "store": next((s for s in stores if s["path"] == str(_store_path(c))), None),
            "config": C.to_dict(c.config),
        } for c, e, disk in zip(cells, est, disks, strict=True)]
        print(json.dumps(rows, indent=1))
        return 0

    header = ["run name", "run id", *grid.axis_names, "params", "tokens", "GPU-h", "mem/GPU", "disk"]
    table = [[c.run_name, c.run_id, *(c.axes[a] for a in grid.axis_names), _si(e["params"]), _si(e["tokens"]),
              _hours(e["gpu_hours"]), _memory(e), _bytes(_run_bytes(d))]
             for c, e, d in zip(cells, est, disks, strict=True)]
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    numeric = set(range(len(header) - 5, len(header)))

    def fmt(row):
        return "  ".join(str(v).rjust(w) if i in numeric else str(v).ljust(w)
                         for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    print(f"# {grid.name} ({grid.source}): {len(cells)} of {len(grid.all_cells)} cells")
    for line in textwrap.wrap(grid.description, 110):
        print(f"# {line}")
    for line in _disk_lines(disks, stores):  # comment lines, like the description: the table stays parseable
        print(f"# {line}")
    print(fmt(header))
    for row in table:
        print(fmt(row))
    tokens = sum(e["tokens"] for e in est)
    hours = [e["gpu_hours"] for e in est]
    total_hours = None if any(h is None for h in hours) else sum(hours)
    print(f"total: {len(cells)} cells, {_si(tokens)} tokens, {_hours(total_hours)} GPU-hours "
          f"(estimated at MFU {args.mfu:.2f} of {args.peak_tflops:g} TFLOP/s peak"
          f"{', ' + grid_mod.PEAK_NOTE if peak == grid_mod.DEFAULT_PEAK_FLOPS else ''}; "
          f"training FLOPs/token from study.model.info)")
    too_big = [c.run_name for c, e in zip(cells, est, strict=True) if e["fits"] is False]
    if too_big:
        print(f"WARNING: {len(too_big)} cells need more than {args.gpu_mem_gb:g} GiB per GPU on {world} GPU(s) "
              f"(marked !): lower train.micro_batch, turn on activation checkpointing or use parallelism fsdp")
    return 0


def _memory(e) -> str:
    if e["memory_per_gpu"] is None:
        return "-"
    return f"{e['memory_per_gpu'] / 2**30:.1f}G" + ("!" if e["fits"] is False else "")


def _store_path(cell):
    from study.data.store_manifest import store_path

    return store_path(cell.config.data, cell.config.model.vocab_size) if cell.config.data.store else None


def _run_bytes(d: dict) -> int:
    """What one run leaves on disk at its end: kept checkpoints, probes, metrics and eval rows."""
    return d["checkpoints"] + d["probes"] + d["metrics"] + d["eval"]


def _disk_lines(disks: list[dict], stores: list[dict]) -> list[str]:
    """The grid's disk plan (study.cost.disk_plan, store_disk), in decimal units."""
    def total(key):
        return sum(d[key] for d in disks)

    def spread(of):
        lo, hi = _bytes(min(map(of, disks))), _bytes(max(map(of, disks)))
        return lo if lo == hi else f"{lo}-{hi}"

    if not disks:
        return []
    keeps = sorted({d["checkpoints"] // d["checkpoint"] for d in disks})
    lines = [f"disk per run: checkpoint {spread(lambda d: d['checkpoint'])} (fp32 weights + AdamW state) x "
             f"{'/'.join(map(str, keeps))} kept; probes {spread(lambda d: d['probes'])}; metrics + eval jsonl "
             f"{spread(lambda d: d['metrics'] + d['eval'])}"]
    runs = sum(_run_bytes(d) for d in disks)
    for s in stores:
        what = (f"{_si(s['train_tokens'])} train tokens, prepared" if s["prepared"] else
                "the whole source (pad packing: no token cap), size unknown until prepared" if s["bytes"] is None
                else f"{_si(s['train_tokens'])} train tokens the largest cell needs x {s['bytes_per_token']} B "
                     f"+ held-out; not prepared yet")
        lines.append(f"disk, token store {s['path']} ({s['cells']} cells): {_bytes(s['bytes'])} ({what})")
    store_bytes = [s["bytes"] for s in stores]
    known = None not in store_bytes
    lines.append(f"disk total: checkpoints {_bytes(total('checkpoints'))} kept ({_bytes(total('checkpoints_peak'))}"
                 f" while every run writes its next one), probes {_bytes(total('probes'))}, metrics + eval "
                 f"{_bytes(total('metrics') + total('eval'))}: runs {_bytes(runs)}"
                 + (f", with the token store{'s' if len(stores) > 1 else ''} "
                    f"{_bytes(runs + sum(store_bytes))}" if stores and known else ""))
    return lines
