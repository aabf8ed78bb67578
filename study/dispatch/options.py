"""Cluster options: checked, typed and merged with precedence CLI > profile > grid `cluster:` > defaults.

CLI flags, profile keys and a grid's `cluster:` section all use the names of OPTION_TYPES (with the aliases of
OPTION_ALIASES); each value goes through study.coerce, the same coercer as the run config. `resolve_options`
records where each value came from; `executor_parameters` turns the result into submitit's keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from study.coerce import coerce
from study.errors import ConfigError
from study.rawconfig import read_yaml

Cluster = Literal["slurm", "local", "debug"]
CLUSTERS: tuple[str, ...] = get_args(Cluster)

# Cluster options: CLI flags, profile keys and the grid's `cluster:` section all use these names.
OPTION_TYPES: dict[str, Any] = {
    "cluster": str,
    "partition": str,
    "account": str,
    "qos": str,
    "constraint": str,
    "nodes": int,
    "gpus_per_node": int,
    "tasks_per_node": int,
    "cpus_per_task": int,
    "mem_gb": float,
    "time": int,  # minutes
    "array_parallelism": int,
    "max_num_timeout": int,
    "signal_delay_s": int,
    "requeue": bool,  # sbatch --requeue (default) / --no-requeue: SLURM may requeue the job after a node failure
    "setup": list[str],  # shell lines run in the job script before the task starts (module load ...)
    "additional": dict,  # extra sbatch flags: {"mail-type": "END"}
    "logs": str,
}
OPTION_ALIASES = {"timeout_min": "time", "time_min": "time", "gpus": "gpus_per_node", "mem": "mem_gb",
                  "array_parallel": "array_parallelism", "parallelism": "array_parallelism",
                  "ntasks_per_node": "tasks_per_node", "additional_parameters": "additional",
                  "slurm_additional_parameters": "additional"}
DEFAULTS = {"nodes": 1, "time": 1440, "array_parallelism": 256, "max_num_timeout": 50, "requeue": True}
SLURM_SIGNAL_DELAY_S = 90  # submitit's default lead of SIGUSR2 before the time limit
# CPUs per task when no layer sets cpus_per_task: SLURM's default is ONE, which starves a GPU task's data
# pipeline and a CPU task's matmuls alike.
CPUS_PER_GPU_TASK = 8
CPUS_PER_CPU_TASK = 4


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
            check_cluster(value, key=str(key), source=source)
        out[k] = value
    return out


def find_profile(name: str | Path) -> Path:
    """A profile path as given, else grids/profiles/<name>[.yaml] under the working directory or the repo."""
    path = Path(name)
    if path.is_file():
        return path
    roots = (Path.cwd(), Path(__file__).resolve().parents[2])  # the repository: study/dispatch/options.py
    for root in roots:
        for rel in (Path(name), Path("grids") / "profiles" / name):
            for cand in (root / rel, root / rel.with_name(rel.name + ".yaml")):
                if cand.is_file():
                    return cand
    raise ConfigError("profile file not found (looked as given and under grids/profiles/)", source=str(name))


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
        raise ConfigError(f"tasks_per_node={out['tasks_per_node']} but gpus_per_node={gpus}: one task per GPU",
                          key="tasks_per_node")
    if out.get("cluster") is not None:
        check_cluster(out["cluster"])
    out["sources"] = sources
    return out


def executor_parameters(options: dict, *, name: str) -> dict:
    """AutoExecutor.update_parameters kwargs for resolved options."""
    gpus = options.get("gpus_per_node") or 0
    params = {
        "name": name,
        "timeout_min": int(options["time"]),
        "nodes": int(options.get("nodes") or 1),
        "tasks_per_node": int(options.get("tasks_per_node") or 1),
        "gpus_per_node": int(gpus) if gpus else None,
        "cpus_per_task": options.get("cpus_per_task"),
        "mem_gb": options.get("mem_gb"),
        "slurm_array_parallelism": int(options["array_parallelism"]),
        "slurm_partition": options.get("partition"),
        "slurm_account": options.get("account"),
        "slurm_qos": options.get("qos"),
        "slurm_constraint": options.get("constraint"),
        "slurm_setup": options.get("setup"),
        "slurm_additional_parameters": options.get("additional"),
        "slurm_signal_delay_s": options.get("signal_delay_s"),
    }
    requeue = options.get("requeue")
    if requeue is not None:  # explicit either way: clusters differ in their JobRequeue default
        extra = {k: v for k, v in (options.get("additional") or {}).items() if k not in ("requeue", "no-requeue")}
        params["slurm_additional_parameters"] = {**extra, ("requeue" if requeue else "no-requeue"): True}
    return {k: v for k, v in params.items() if v is not None}


def option_warnings(options: dict) -> list[str]:
    """Cluster options that will work but probably not as meant."""
    out = []
    lead = options.get("signal_delay_s")
    if lead is None and options.get("cluster") == "slurm":
        lead = SLURM_SIGNAL_DELAY_S
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


def check_cluster(cluster: object, *, key: str = "--cluster", source: str | None = None) -> None:
    """A clear error for a cluster name that is not one of CLUSTERS."""
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown cluster {cluster!r}; valid choices: {', '.join(CLUSTERS)}", key=key,
                          source=source)


def summarize_options(options: dict) -> str:
    src = options.get("sources", {})
    keys = [k for k in options if k != "sources"]
    return ", ".join(f"{k}={options[k]!r} ({src.get(k, '?')})" for k in sorted(keys))
