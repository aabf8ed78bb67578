"""Cluster options: one annotated dataclass, merged with precedence CLI > profile > grid `cluster:` > defaults.

ClusterOptions states each option once: its name, its type (checked by study.coerce, the run config's coercer),
its default (None: unset), and in its field metadata the help of its command-line flag and its other spellings.
The flags of `study submit` and `study data prepare --cluster` (`add_flags`), the keys a profile or a grid's
`cluster:` section may use (`check_options`) and the defaults are all read off it. `resolve_options` records
where each value came from; `executor_parameters` turns the result into submitit's keyword arguments: the shared
ones here, each backend's own from its record (study.clusters).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.clusters import BACKENDS, backend
from study.coerce import coerce
from study.errors import ConfigError
from study.rawconfig import find_yaml, read_yaml


def _opt(default=None, help: str | None = None, *, flag: bool = True, metavar: str | None = None,
         aliases: tuple[str, ...] = ()):
    """A field of ClusterOptions: `flag` False for options only a profile or grid sets (lists, mappings)."""
    return field(default=default, metadata={"help": help, "flag": flag, "metavar": metavar, "aliases": aliases})


@dataclass(frozen=True)
class ClusterOptions:
    """Every option of a submission (the schema: read with `fields()`, never instantiated with values)."""

    cluster: str | None = _opt(help="where the jobs run")  # a name of study.clusters.BACKENDS
    partition: str | None = _opt()
    account: str | None = _opt()
    qos: str | None = _opt()
    constraint: str | None = _opt()
    nodes: int = _opt(1, "nodes per run (default 1)")
    gpus_per_node: int | None = _opt(help="GPUs per node; one task per GPU", aliases=("gpus",))
    tasks_per_node: int | None = _opt(help="processes per node (default: gpus-per-node, or 1 without GPUs; e.g. 2 "
                                           "for CPU DDP)", aliases=("ntasks_per_node",))
    cpus_per_task: int | None = _opt()
    mem_gb: float | None = _opt(aliases=("mem",))
    time: int = _opt(1440, "time limit per job in minutes (default 1440); on timeout the run checkpoints and "
                           "requeues", metavar="MIN", aliases=("timeout_min", "time_min"))
    signal_delay_s: int | None = _opt(help="SLURM sends the checkpoint signal (SIGUSR2) S seconds before --time "
                                           "ends (default 90); raise it for big models on slow filesystems",
                                      metavar="S")
    # sbatch --requeue (default) / --no-requeue: SLURM may requeue the job after a node failure
    requeue: bool = _opt(True, "let SLURM requeue a job after a node failure or preemption (default: on)")
    array_parallelism: int = _opt(256, "at most K array tasks run at once (default 256)", metavar="K",
                                  aliases=("array_parallel", "parallelism"))
    max_num_timeout: int = _opt(50, flag=False)  # requeues after a timeout before submitit gives up
    setup: list[str] | None = _opt(flag=False)  # shell lines run in the job script before the task (module load)
    additional: dict | None = _opt(flag=False, aliases=("additional_parameters", "slurm_additional_parameters"))
    logs: str | None = _opt(help="submitit log folder (default: ROOT/GRID/.submitit/%%j)")


def _without_none(tp):
    """`int | None` -> int: a None value is 'unset' and never checked against the type."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp


FIELDS = {f.name: f for f in dataclasses.fields(ClusterOptions)}
OPTION_TYPES: dict[str, Any] = {k: _without_none(tp) for k, tp in typing.get_type_hints(ClusterOptions).items()}
OPTION_ALIASES = {alias: name for name, f in FIELDS.items() for alias in f.metadata["aliases"]}
DEFAULTS = {name: f.default for name, f in FIELDS.items() if f.default is not None}
FLAGS = tuple(name for name, f in FIELDS.items() if f.metadata["flag"])
# CPUs per task when no layer sets cpus_per_task: SLURM's default is ONE, which starves a GPU task's data
# pipeline and a CPU task's matmuls alike.
CPUS_PER_GPU_TASK = 8
CPUS_PER_CPU_TASK = 4


def add_flags(parser, names=FLAGS, *, help: dict | None = None) -> None:
    """`--name-with-dashes` flags for the options `names`, typed from their annotations (default None: unset, so
    a profile or the grid decides); `help` overrides a flag's help text."""
    help = help or {}
    for name in names:
        f, tp = FIELDS[name], OPTION_TYPES[name]
        text = help.get(name, f.metadata["help"])
        kw: dict = {"default": None, "help": text}
        if name == "cluster":
            kw["choices"] = BACKENDS  # the live table (argparse lists its keys)
            kw["help"] = f"{text}: " + ", ".join(f"{b.name} ({b.help})" for b in BACKENDS.values())
        elif tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=tp, metavar=f.metadata["metavar"])
        parser.add_argument("--" + name.replace("_", "-"), **kw)


def _norm_option_key(key: str) -> str:
    k = str(key).strip().replace("-", "_")
    if k.startswith("slurm_") and k[len("slurm_"):] in OPTION_TYPES:
        k = k[len("slurm_"):]
    return OPTION_ALIASES.get(k, k)


def check_options(raw: dict | None, *, source: str) -> dict:
    """Validate one source of cluster options (profile file or grid `cluster:` section); normalise keys."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of cluster options, got {raw!r}", source=source)
    out = {}
    for key, value in raw.items():
        k = _norm_option_key(key)
        if k not in OPTION_TYPES:
            raise ConfigError(f"unknown cluster option; valid keys: {', '.join(OPTION_TYPES)}", key=str(key),
                              source=source)
        if value is None:
            continue
        tp = OPTION_TYPES[k]
        value = coerce(value, tp, str(key), source, number_as_str=True, scalar_as_list=True)
        if tp in (int, float) and value < 0:
            raise ConfigError(f"must be >= 0, got {value!r}", key=str(key), source=source)
        if k == "cluster":
            backend(value, key=str(key), source=source)
        out[k] = value
    return out


def find_profile(name: str | Path) -> Path:
    """A profile path as given, else grids/profiles/<name>[.yaml] under the working directory or the repo."""
    return find_yaml(name, "grids/profiles", what="profile")


def load_profile(path: str | Path | None) -> dict:
    """A cluster profile: a YAML mapping of the options above (optionally nested under `cluster:`)."""
    if not path:
        return {}
    found = find_profile(path)
    raw = read_yaml(found)
    if set(raw) == {"cluster"} and isinstance(raw["cluster"], dict):
        raw = raw["cluster"]
    return check_options(raw, source=str(found))


def resolve_options(cli: dict | None = None, profile: dict | None = None, grid: dict | None = None, *,
                    grid_source: str = "grid") -> dict:
    """Merge cluster options with precedence CLI > profile > grid > DEFAULTS (None in `cli` means unset).

    `profile` and `grid` are raw mappings (validated here); the result also records where each value came from
    under the key 'sources'.
    """
    layers = [("default", dict(DEFAULTS)),
              ("grid", check_options(grid, source=f"{grid_source} (cluster)")),
              ("profile", check_options(profile, source="profile") if profile else {}),
              ("cli", {k: v for k, v in (cli or {}).items() if v is not None})]
    out: dict = {}
    sources: dict = {}
    for name, layer in layers:
        for k, v in layer.items():
            out[k] = v
            sources[k] = name
    gpus = out.get("gpus_per_node") or 0
    if "tasks_per_node" not in out:
        out["tasks_per_node"] = gpus if gpus > 0 else 1  # one task per GPU
        sources["tasks_per_node"] = sources.get("gpus_per_node", "default")
    if "cpus_per_task" not in out:
        out["cpus_per_task"] = CPUS_PER_GPU_TASK if gpus > 0 else CPUS_PER_CPU_TASK
        sources["cpus_per_task"] = "default"
    if gpus and out["tasks_per_node"] != gpus:
        named = {"grid": f"{grid_source} (cluster)", "profile": "profile", "cli": "the command line"}
        raise ConfigError(f"tasks_per_node={out['tasks_per_node']} but gpus_per_node={gpus}: one task per GPU",
                          key="tasks_per_node", source=named.get(sources.get("tasks_per_node", "")))
    if out.get("cluster") is not None:
        backend(out["cluster"])
    out["sources"] = sources
    return out


def executor_parameters(options: dict, *, name: str) -> dict:
    """AutoExecutor.update_parameters kwargs for resolved options: the shared ones, and each backend's own
    (prefixed with its name; submitit applies those of the executor it runs and ignores the others)."""
    gpus = options.get("gpus_per_node") or 0
    params = {
        "name": name,
        "timeout_min": int(options["time"]),
        "nodes": int(options.get("nodes") or 1),
        "tasks_per_node": int(options.get("tasks_per_node") or 1),
        "gpus_per_node": int(gpus) if gpus else None,
        "cpus_per_task": options.get("cpus_per_task"),
        "mem_gb": options.get("mem_gb"),
    }
    for b in BACKENDS.values():
        params.update(b.parameters(options))
    return {k: v for k, v in params.items() if v is not None}


def option_warnings(options: dict) -> list[str]:
    """Cluster options that will work but probably not as meant."""
    out = []
    lead = options.get("signal_delay_s")
    if lead is None and options.get("cluster") in BACKENDS:
        lead = BACKENDS[options["cluster"]].signal_delay_s
    time_s = int(options.get("time") or 0) * 60
    if time_s and lead is not None:
        if lead >= time_s:
            out.append(f"warning: --signal-delay-s {lead} is not shorter than --time {time_s // 60} min: the job is "
                       f"told to checkpoint before it starts training")
        elif lead * 4 > time_s:
            out.append(f"warning: --time {time_s // 60} min with a {lead} s checkpoint lead: a quarter or more of "
                       f"every job is spent before its checkpoint signal; give --time a larger value")
    if lead is not None and lead < 30:
        out.append(f"warning: --signal-delay-s {lead}: a large model's checkpoint may not finish in {lead} s "
                   f"before SLURM kills the job")
    return out


def summarize_options(options: dict) -> str:
    src = options.get("sources", {})
    keys = [k for k in options if k != "sources"]
    return ", ".join(f"{k}={options[k]!r} ({src.get(k, '?')})" for k in sorted(keys))
