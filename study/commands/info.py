"""`study info MODEL [--json]`: parameters, FLOPs per token and a training-memory estimate of a model.

MODEL is a scale preset (study.presets.SCALES) or a run-config YAML file (its `model` section; its `train`
section supplies the memory defaults that the flags below do not override).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from study.config import PARALLELISMS, PRECISIONS


def register(sub) -> None:
    p = sub.add_parser("info", help="parameter count, FLOPs per token and memory estimate of a model")
    p.add_argument("model", metavar="MODEL", help="scale preset name (e.g. 130m, tiny) or a run-config YAML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per forward pass (default: config)")
    p.add_argument("--world-size", type=int, default=1, help="number of processes (default: 1)")
    p.add_argument("--parallelism", choices=PARALLELISMS, default=None, help="ddp or fsdp (default: config)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default: config (auto = bf16 autocast)")
    p.add_argument("--activation-checkpointing", action="store_true", default=None,
                   help="estimate with activation checkpointing (default: config)")
    p.add_argument("--nodes", type=int, default=1, help="nodes the processes run on (default: 1)")
    p.add_argument("--signal-delay-s", type=int, default=None, metavar="S",
                   help="the checkpoint signal's lead before the time limit (default: SLURM's, 90 s as study "
                        "submit sets it): is it long enough to write a checkpoint?")
    p.set_defaults(func=run)


def load_run_config(model: str):
    """RunConfig for a preset name or a YAML path; ConfigError naming the presets if it is neither."""
    from study import config, presets
    from study.errors import ConfigError

    if model in presets.SCALES:
        return config.resolve({"model": {"scale": model}}, source=f"preset {model}")
    if Path(model).suffix in (".yaml", ".yml") or Path(model).is_file():
        return config.load(model)
    listed = ", ".join(presets.SCALES)
    raise ConfigError(f"unknown scale {model!r} (not a preset, not a config file); valid choices: {listed}")


def gather(args) -> dict:
    from study.cost import checkpoint_plan
    from study.errors import ConfigError
    from study.model.info import info, memory_estimate

    cfg = load_run_config(args.model)
    t = cfg.train
    micro_batch = t.micro_batch if args.micro_batch is None else args.micro_batch
    if micro_batch < 1 or args.world_size < 1:
        raise ConfigError(f"--micro-batch and --world-size must be >= 1, got {micro_batch}, {args.world_size}")
    memory = memory_estimate(
        cfg.model,
        micro_batch=micro_batch,
        world_size=args.world_size,
        parallelism=args.parallelism or t.parallelism,
        precision=args.precision or t.precision,
        activation_checkpointing=t.activation_checkpointing if args.activation_checkpointing is None
        else args.activation_checkpointing,
    )
    out = info(cfg.model)
    if args.nodes < 1 or args.world_size % args.nodes:
        raise ConfigError(f"--nodes must be >= 1 and divide --world-size {args.world_size}, got {args.nodes}")
    lead = args.signal_delay_s
    if lead is None:
        from study.clusters import BACKENDS
        lead = BACKENDS["slurm"].signal_delay_s  # the lead SLURM jobs get by default
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, parallelism=args.parallelism or t.parallelism,
                                                                 precision=args.precision or t.precision))
    out["checkpoint"] = checkpoint_plan(run_cfg, world_size=args.world_size, nodes=args.nodes, lead_s=lead)
    out["memory"] = {
        **memory, "micro_batch": micro_batch, "world_size": args.world_size,
        "parallelism": args.parallelism or t.parallelism, "precision": args.precision or t.precision,
        "activation_checkpointing": bool(args.activation_checkpointing or t.activation_checkpointing),
    }
    return out


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def run(args) -> int:
    out = gather(args)
    if args.json:
        print(json.dumps(out))
        return 0
    m = out["memory"]
    rows = [
        ("model", args.model),
        ("params", f"{out['params']:,} ({out['params'] / 1e6:.1f}M)"),
        ("non-embedding params", f"{out['non_embedding_params']:,} ({out['non_embedding_params'] / 1e6:.1f}M)"),
        ("layers", out["layers"]),
        ("d_model", out["d_model"]),
        ("seq_len", out["seq_len"]),
        ("FLOPs per token", f"{out['flops_per_token']:.4g}"),
        ("FLOPs formula", out["flops_formula"]),
        ("memory per device", f"micro-batch {m['micro_batch']}, {m['parallelism']} × {m['world_size']}, "
                              f"{m['precision']}, "
                              f"activation checkpointing {'on' if m['activation_checkpointing'] else 'off'}"),
        ("  weights", _gib(m["params_bytes"])),
        ("  gradients", _gib(m["grads_bytes"])),
        ("  AdamW state", _gib(m["optimizer_bytes"])),
        ("  activations", _gib(m["activations_bytes"])),
        ("  total", _gib(m["total_bytes"])),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    from study.cost import checkpoint_lines
    for line in checkpoint_lines(out["checkpoint"]):
        print(line)
    return 0
