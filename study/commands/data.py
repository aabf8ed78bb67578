"""`study data prepare|info|verify`: the token store of a run config's or a grid's data (study.data.store).

    study data prepare grids/paper/main.yaml --workers 16    # once, where the source is readable
    study data info grids/paper/main.yaml                    # where the store is, and whether it is ready
    study data verify grids/paper/main.yaml                  # every shard against the manifest's sha256

A grid's cells that share their data (source, splits, tokenizer) share one store, prepared once, up to the
training tokens the cell that needs most trains on (`--max-tokens`). The store is tokenized in parallel by
`--workers` workers (threads for a local corpus with a fast tokenizer, else processes), one unit (a parquet row
group or another shard of a dataset, or 256 documents of a local corpus) at a time; the result does not depend
on the number of workers. Re-running resumes a partial store, and on a finished one checks every file and
rewrites the damaged ones only (docs/data.md). `verify` also takes a store folder; each problem is one line, exit 2.

With `--cluster NAME` the preparation is a job array and a finalize job (study.dispatch.prepare: re-running it
submits only the units left, and cancels a finalize job stranded by a lost task); `study data info` reports a
partial store: its units done and to do, and the jobs preparing it.
"""

from __future__ import annotations

import json
import os

from study.clusters.options import add_flags
from study.errors import ConfigError

# The cluster options of a preparation job (study.clusters.options), besides --cluster: CPU-only tasks.
PREPARE_FLAGS = ("partition", "account", "time", "cpus_per_task", "mem_gb", "logs")


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare the token store a config or grid trains from (once, in parallel)")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))
    for name, helptext in (("prepare", "tokenize the data of a config or grid once into its token store (on a "
                                       "prepared store: check every file, rewrite the damaged ones)"),
                           ("info", "where a config's or grid's token store is and whether it is prepared"),
                           ("verify", "check every shard of a token store against its manifest (sha256); one "
                                      "line per problem, exit 2")):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("config", metavar="STORE_OR_GRID" if name == "verify" else "CONFIG_OR_GRID",
                       help="run config YAML or grid file (or a grid name)"
                            + ("; or a store folder (holding manifest.json)" if name == "verify" else ""))
        q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (run configs only; repeatable)")
        q.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "verify":
            q.add_argument("--workers", type=int, default=None,
                           help="files hashed at once (default: the CPUs available to this process)")
        if name == "prepare":
            q.add_argument("--max-tokens", type=int, default=None, metavar="N",
                           help="stop once the store holds N training tokens (whole units in source order, the "
                                "same store on any number of workers; 0: the whole source). Default: what the "
                                "config, or the grid's largest cell, trains on (train.steps x global_batch x "
                                "seq_len + 1; the whole source in pad packing)")
            q.add_argument("--workers", type=int, default=None,
                           help="tokenizing workers per machine: threads for a local corpus with a fast "
                                "tokenizer, else processes (default: the CPUs available to this process; "
                                "with --cluster: --cpus-per-task)")
            c = q.add_argument_group("as a job array (submitit): each task prepares its share of the source's "
                                     "shards, then one job finalizes")
            add_flags(c, ["cluster"], help={"cluster": "submit the preparation instead of running it here"})
            c.add_argument("--tasks", type=int, default=8, help="array tasks (default 8; at most one per unit)")
            c.add_argument("--profile", default=None, metavar="FILE.yaml", help="cluster profile (as study submit)")
            add_flags(c, PREPARE_FLAGS, help={"time": "minutes per task (default 240)",
                                              "cpus_per_task": "CPUs per task (= its workers)",
                                              "logs": "submitit log folder (default: STORE.submitit, beside "
                                                      "the store)"})
        q.set_defaults(func=run)


def data_configs(target: str, overrides: list[str]) -> list[tuple]:
    """The distinct (data config, vocab size) pairs a run config or a grid needs, as (RunConfig with the store
    on, the training tokens the cells sharing its store need at most: 0, the whole source, when one of them
    packs by document)."""
    import dataclasses
    from pathlib import Path

    from study import config, rawconfig
    from study.grid import find_grid, load_grid

    path = Path(target)
    if not path.is_file():
        try:
            path = find_grid(target)
        except ConfigError:
            path = None
    if path is None or not path.is_file():
        raise ConfigError("file not found (expected a run config or a grid)", source=target)
    is_grid = "axes" in rawconfig.read_yaml(path)
    if is_grid:
        if overrides:
            raise ConfigError("--set applies to run configs; edit the grid instead", key="--set")
        cfgs = [c.config for c in load_grid(path).cells()]
    else:
        cfgs = [config.load(path, overrides)]
    out: dict[str, tuple] = {}
    from study.data.store_manifest import store_path, tokens_needed

    for cfg in cfgs:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, store=True))
        key = str(store_path(cfg.data, cfg.model.vocab_size))
        first, most = out.get(key, (cfg, None))
        need = tokens_needed(cfg)
        out[key] = (first, 0 if need is None or most == 0 else max(most or 0, need))
    return list(out.values())


def _max_tokens(args, need: int) -> int:
    """--max-tokens, checked, or the cells' need (data_configs)."""
    if args.max_tokens is not None and args.max_tokens < 0:
        raise ConfigError(f"--max-tokens must be >= 0 (0: the whole source), got {args.max_tokens}", key="--max-tokens")
    return need if args.max_tokens is None else args.max_tokens


def _usable_cpus() -> int:
    """The CPUs this process may run on (a SLURM allocation's, not the node's), where the OS says."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run(args) -> int:
    from study.data import store

    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}", key="--workers")
    if args.data_command == "verify":
        return _verify(args)
    cfgs = data_configs(args.config, args.overrides)
    if args.data_command == "prepare" and args.cluster:
        return _submit(args, cfgs)
    rows = []
    for cfg, need in cfgs:
        if args.data_command == "prepare":
            workers = args.workers or _usable_cpus()
            path = store.prepare(cfg.data, cfg.model.vocab_size, workers=workers, max_tokens=_max_tokens(args, need))
        else:
            path = store.store_path(cfg.data, cfg.model.vocab_size)
        row = {"store": str(path), "prepared": (path / "manifest.json").exists(), "needed_tokens": need or None}
        if not row["prepared"]:
            row.update(_partial(path, args.config))
        if row["prepared"]:
            m = store.open_store(cfg.data, cfg.model.vocab_size).manifest
            row.update(train_tokens=m["splits"]["train"]["tokens"], heldout_tokens=m["splits"]["heldout"]["tokens"],
                       tokenizer=m["tokenizer"]["name"], source=m["source"]["describe"],
                       seconds=m["prepared"]["seconds"], workers=m["prepared"]["workers"],
                       max_tokens=m.get("max_tokens"), complete=m.get("complete", True))
        rows.append(row)
    if args.json:
        print(json.dumps(rows if len(rows) != 1 else rows[0], indent=1))
        return 0
    for row in rows:
        if row["prepared"]:
            cut = ""
            if not row["complete"]:
                cut = f", cut at --max-tokens {row['max_tokens']:,}"
                if (row["needed_tokens"] or 0) > row["train_tokens"]:
                    cut += f"; short of the {row['needed_tokens']:,} its runs train on: prepare it again"
            print(f"{row['store']}: {row['train_tokens']:,} train and {row['heldout_tokens']:,} held-out tokens "
                  f"({row['source']}, tokenizer {row['tokenizer']}{cut})")
        elif row.get("partial"):
            print(f"{row['store']}: {row['partial']}")
        else:
            print(f"{row['store']}: not prepared (run: study data prepare {args.config})")
    return 0


def _partial(path, hint: str) -> dict:
    """What `study data info` says of a store that is not prepared: its partial folder's units and jobs."""
    from study.dispatch.prepare import describe, standing

    st = standing(path)
    if st is None:
        return {}
    return {"partial": describe(st, hint), "units": st.units, "units_to_do": len(st.todo),
            "jobs": dict(st.states), "stranded": st.finalize if st.stranded else None}


def _submit(args, cfgs) -> int:
    """`study data prepare --cluster ...`: per store, a job array of the units still to do and a finalize job
    (study.dispatch.prepare, which also says what it finds of an earlier submission)."""
    from study.dispatch import load_profile, resolve_options
    from study.dispatch.prepare import submit_prepare

    if args.tasks < 1:
        raise ConfigError(f"--tasks must be >= 1, got {args.tasks}", key="--tasks")
    cli = {k: getattr(args, k) for k in ("cluster", *PREPARE_FLAGS) if k != "logs"}
    # CPU-only tasks whatever the profile says about GPUs, never requeued (they cannot resume from a checkpoint:
    # a rerun does what is left); 4 hours unless told otherwise
    options = resolve_options({**cli, "gpus_per_node": 0, "tasks_per_node": 1, "nodes": 1, "requeue": False},
                              load_profile(args.profile), {"time": 240})
    workers = args.workers or int(options["cpus_per_task"])
    for cfg, need in cfgs:
        submit_prepare(cfg.data, cfg.model.vocab_size, cluster=args.cluster, options=options,
                       logs=args.logs, tasks=args.tasks, workers=workers, max_tokens=_max_tokens(args, need),
                       hint=args.config)
    return 0


def _verify(args) -> int:
    """`study data verify`: every store of a config or grid (or the store folder given), each file hashed; one
    line per problem and exit 2, else one OK line per store."""
    from pathlib import Path

    from study import console
    from study.data import store_check, store_read
    from study.data.store_manifest import StoreError, store_path

    target = Path(args.config)
    if target.is_dir():
        if args.overrides:
            raise ConfigError("--set applies to run configs, not to a store folder", key="--set")
        stores = [(target, None)]
    else:
        stores = [(store_path(cfg.data, cfg.model.vocab_size), cfg) for cfg, _ in data_configs(args.config,
                                                                                                 args.overrides)]
    hint = f"study data prepare {args.config}" if not target.is_dir() else "study data prepare CONFIG_OR_GRID"
    rows, lines = [], []
    for path, cfg in stores:
        row = {"store": str(path), "problems": []}
        rows.append(row)
        try:
            manifest = store_read.read_manifest(path, cfg and cfg.data, cfg and cfg.model.vocab_size)
        except StoreError as exc:
            row["problems"].append(str(exc))
            lines.append(str(exc))
            continue
        problems, totals = store_check.verify(path, manifest, workers=args.workers or _usable_cpus())
        _, tok_problem = store_read.saved_tokenizer(path, manifest)
        row.update(totals)
        row["problems"] = problems + ([tok_problem] if tok_problem else [])
        lines += [f"token store {path}: {p}; `{hint}` rewrites the damaged files" for p in problems]
        if tok_problem:
            lines.append(f"token store {path}: {tok_problem}; delete the store and prepare it again")
    if args.json:
        print(json.dumps(rows if len(rows) != 1 else rows[0], indent=1))
    else:
        for row in rows:
            if not row["problems"]:
                print(f"{row['store']}: OK, {row['shards']} shards ({row['bytes']:,} bytes) match the manifest's "
                      f"sha256 ({row['seconds']:.1f} s)")
        for line in lines:
            console.log.error("%s", line)
    return 2 if lines else 0
