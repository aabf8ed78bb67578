"""Does a request fit a node? The cluster options of a submission against the nodes of its partition.

A job that asks for more CPUs, memory or GPUs than any node of its partition has is accepted by `sbatch` and then
waits in the queue forever (reason: Resources), with no word to the user. The SLURM backend lists the nodes with
`sinfo` (study/clusters/slurm.py) and `check_fit` refuses such a request in one line naming the flag to change
and the largest value that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.errors import ConfigError


@dataclass(frozen=True)
class Node:
    name: str
    partition: str
    default: bool  # the partition a job without --partition goes to (sinfo marks it with '*')
    cpus: int
    mem_mb: int
    gpus: int


def _number(text: str) -> int:
    digits = text.strip().rstrip("+")
    return int(digits) if digits.isdigit() else 0


def gres_gpus(gres: str) -> int:
    """GPUs in a node's GRES as sinfo prints it: 'gpu:8', 'gpu:a100:4(S:0-1),gpu:v100:2', '(null)' -> 8, 6, 0."""
    total = 0
    for entry in gres.split(","):
        fields = entry.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) > 1:
            total += _number(fields[-1])
    return total


def parse_sinfo(text: str) -> list[Node]:
    """Nodes from `sinfo -h -N -o '%N|%P|%c|%m|%G'` (one line per node and partition)."""
    nodes = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or not parts[0]:
            continue
        name, part, cpus, mem, gres = parts
        nodes.append(Node(name, part.rstrip("*"), part.endswith("*"), _number(cpus), _number(mem), gres_gpus(gres)))
    return nodes


_SOURCES = {"default": " (the default)", "grid": " (the grid's cluster section)", "profile": " (the profile)"}


def _said(options: dict, key: str) -> str:
    """Where an option's value came from, for a refusal: nothing when it was given on the command line."""
    return _SOURCES.get(options.get("sources", {}).get(key, "cli"), "")


def check_fit(options: dict, nodes: list[Node]) -> None:
    """A ConfigError naming the flag when the request of resolved `options` (study.clusters.options) fits no node
    of its partition (or fewer nodes than --nodes); nothing when it fits, or when `nodes` is empty."""
    if not nodes:
        return
    wanted = options.get("partition")
    if wanted:
        part = [n for n in nodes if n.partition == wanted]
        if not part:
            names = sorted({n.partition for n in nodes})
            raise ConfigError(f"no partition {wanted!r} on this cluster (sinfo lists: {', '.join(names)})",
                              key="--partition")
        label = wanted
    else:
        part = [n for n in nodes if n.default] or nodes
        label = part[0].partition if all(n.partition == part[0].partition for n in part) else "the default"
    tasks = int(options.get("tasks_per_node") or 1)
    per_task = int(options.get("cpus_per_task") or 1)
    mem_mb = float(options.get("mem_gb") or 0) * 1024  # submitit asks for --mem=<N>GB: GiB to SLURM
    gpus = int(options.get("gpus_per_node") or 0)
    most_cpus, most_mem, most_gpus = (max(getattr(n, k) for n in part) for k in ("cpus", "mem_mb", "gpus"))
    if gpus > most_gpus:
        raise ConfigError(f"{gpus} GPUs per node{_said(options, 'gpus_per_node')}, but no node of partition "
                          f"{label!r} has more than {most_gpus}: the job would wait forever", key="--gpus-per-node")
    if per_task * tasks > most_cpus:
        times = f" x {tasks} tasks per node" if tasks > 1 else ""
        raise ConfigError(f"{per_task} CPUs per task{_said(options, 'cpus_per_task')}{times}, but no node of "
                          f"partition {label!r} has more than {most_cpus} CPUs: the job would wait forever; give "
                          f"--cpus-per-task {max(1, most_cpus // tasks)} or less", key="--cpus-per-task")
    if mem_mb > most_mem:
        raise ConfigError(f"{options['mem_gb']:g} GB per node{_said(options, 'mem_gb')}, but no node of partition "
                          f"{label!r} has more than {most_mem / 1024:.1f} GB: the job would wait forever; give "
                          f"--mem-gb {max(1, int(most_mem // 1024))} or less", key="--mem-gb")
    fitting = [n for n in part if n.cpus >= per_task * tasks and n.mem_mb >= mem_mb and n.gpus >= gpus]
    want_nodes = int(options.get("nodes") or 1)
    if len(fitting) < want_nodes:
        raise ConfigError(f"{want_nodes} nodes{_said(options, 'nodes')}, but partition {label!r} has "
                          f"{len(fitting)} that can hold this request: the job would wait forever", key="--nodes")
