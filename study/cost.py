"""What a run costs: GPU peak FLOP/s by device, MFU, and the GPU-hour and memory estimate of one run.

The one table of peak FLOP/s in the study: `study grid show` estimates GPU-hours from it, the trainer divides
measured FLOP/s by it for the MFU it logs, and benchmarks/throughput.py reports MFU against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from study.config import RunConfig
from study.errors import ConfigError

if TYPE_CHECKING:  # cost sits below the grid: a Cell is only a type here
    from study.grid import Cell

# Dense bf16 peak FLOP/s by device name, for MFU (vendor datasheets, without sparsity). Matched as a substring
# of torch.cuda.get_device_name(), in this order.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
              "A10G": 125e12, "RTX 4090": 165e12, "V100": 125e12}
DEFAULT_PEAK_FLOPS = PEAK_FLOPS["H100"]  # what the paper's grids are planned for
PEAK_NOTE = "H100 SXM bf16 dense"
DEFAULT_MFU = 0.40

__all__ = ["PEAK_FLOPS", "DEFAULT_PEAK_FLOPS", "PEAK_NOTE", "DEFAULT_MFU", "device_peak_flops", "estimate"]


def device_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from its name ('NVIDIA H100 80GB HBM3' -> 989e12); None if unknown."""
    return next((v for k, v in PEAK_FLOPS.items() if k in device_name), None)


def estimate(cell: Cell | RunConfig, *, mfu: float = DEFAULT_MFU, peak_flops: float = DEFAULT_PEAK_FLOPS,
             world_size: int = 1, gpu_mem_bytes: float | None = None) -> dict:
    """{'params', 'tokens', 'gpu_hours', 'flops_per_token', 'mfu', 'peak_flops', 'memory_per_gpu', 'fits'}.

    tokens = steps · global_batch · seq_len; gpu_hours = tokens · flops_per_token / (mfu · peak_flops) / 3600,
    with flops_per_token the training FLOPs of study.model.info (6N + attention). memory_per_gpu is
    study.model.memory_estimate for the cell's micro-batch, parallelism and precision over `world_size` GPUs;
    fits compares it with gpu_mem_bytes (None when not given).
    """
    cfg = cell if isinstance(cell, RunConfig) else cell.config  # a RunConfig, or a grid Cell holding one
    if not mfu > 0 or not peak_flops > 0:
        raise ConfigError(f"MFU and peak FLOP/s must be > 0, got {mfu} and {peak_flops}", key="--mfu")
    tokens = cfg.train.steps * cfg.train.global_batch * cfg.model.seq_len
    from study.model import info, memory_estimate  # here: torch loads only when an estimate is asked for

    model = info(cfg.model)
    params, fpt = model["params"], model["flops_per_token"]
    hours = tokens * fpt / (mfu * peak_flops) / 3600.0
    memory = memory_estimate(cfg.model, micro_batch=cfg.train.micro_batch, world_size=max(1, world_size),
                             parallelism=cfg.train.parallelism, precision=cfg.train.precision,
                             activation_checkpointing=cfg.train.activation_checkpointing)["total_bytes"]
    fits = None if gpu_mem_bytes is None else memory <= gpu_mem_bytes
    return {"params": params, "tokens": tokens, "gpu_hours": hours, "flops_per_token": fpt, "mfu": mfu,
            "peak_flops": peak_flops, "memory_per_gpu": memory, "fits": fits}



# ---- checkpoints inside the preemption window ------------------------------------------------------------------
# The write bandwidth per node we plan checkpoints with. The one write measured on GPU hardware: an H200
# machine's local disk had not finished the synchronous 7b final save (81 GB: torch.save, sha256, fsync) after
# ~100 s, i.e. under 0.8 GB/s (../shared/measurements/gpu-h200-2026-12-04, recorded in benchmarks/README.md); a
# node's link to a shared filesystem is of the same order and shared by its 8 ranks and other jobs. So: 0.5 GB/s
# per node to plan with (a lead short of it is warned about), and 2 GB/s per node as what a fast local NVMe or
# parallel-filesystem client might sustain (a lead short even of that is refused).
ASSUMED_WRITE_BPS = 0.5e9
FAST_WRITE_BPS = 2e9
LEAD_MARGIN_S = 15  # after the save: status, lease release and process exit, and the signal's own delivery


def checkpoint_plan(cfg: RunConfig, *, world_size: int = 1, nodes: int = 1, lead_s: float | None = None,
                    mfu: float = DEFAULT_MFU, peak_flops: float = DEFAULT_PEAK_FLOPS) -> dict:
    """What one checkpoint of `cfg` writes and whether the signal lead `lead_s` leaves time to write it.

    bytes: fp32 weights + AdamW moments (study.model.memory_estimate's weights and optimizer state; bf16-pure
    halves them). Under FSDP every rank writes its 1/world share and a node writes bytes/nodes; otherwise rank 0
    writes all of it. After the signal the trainer reaches its next log step (stop checks happen there, up to
    log_every steps at the estimated step time), waits for a save already in flight, then writes the stop
    checkpoint: lead_needed_s = reach_s + 2 * bytes_per_node / ASSUMED_WRITE_BPS + LEAD_MARGIN_S.
    needs_bps: the write bandwidth per node the lead implies (inf when the lead does not even cover reaching the
    step). verdict: 'ok', 'warn' (short at ASSUMED_WRITE_BPS) or 'refuse' (short even at FAST_WRITE_BPS).
    """
    from study.model import info, memory_estimate

    world = max(1, world_size)
    fsdp = cfg.train.parallelism == "fsdp" and world > 1
    per_rank = memory_estimate(cfg.model, world_size=world, parallelism=cfg.train.parallelism,
                               precision=cfg.train.precision)
    rank_bytes = per_rank["params_bytes"] + per_rank["optimizer_bytes"]
    total = rank_bytes * world if fsdp else rank_bytes
    per_node = -(-total // max(1, nodes)) if fsdp else total
    tokens = cfg.train.global_batch * cfg.model.seq_len
    step_s = tokens * info(cfg.model)["flops_per_token"] / (mfu * peak_flops * world)
    reach_s = cfg.train.log_every * step_s
    writes = 2 * per_node  # a save in flight, then the stop's own

    def lead_at(bps: float) -> float:
        return reach_s + writes / bps + LEAD_MARGIN_S

    plan = {"bytes": total, "bytes_per_rank": rank_bytes if fsdp else total, "bytes_per_node": per_node,
            "writers": world if fsdp else 1, "step_s": step_s, "reach_s": reach_s,
            "save_s": per_node / ASSUMED_WRITE_BPS, "lead_needed_s": lead_at(ASSUMED_WRITE_BPS),
            "assumed_bps": ASSUMED_WRITE_BPS, "lead_s": lead_s, "needs_bps": None, "verdict": "ok"}
    if lead_s is not None:
        room = lead_s - reach_s - LEAD_MARGIN_S
        plan["needs_bps"] = writes / room if room > 0 else float("inf")
        plan["verdict"] = ("refuse" if lead_s < lead_at(FAST_WRITE_BPS)
                           else "warn" if lead_s < plan["lead_needed_s"] else "ok")
    return plan


def checkpoint_lines(plan: dict, *, lead_flag: str = "--signal-delay-s") -> list[str]:
    """The plan in words: one line, plus a warning naming the lead to use when the lead is short."""
    gb = 1e9
    who = (f"{plan['bytes_per_rank'] / gb:.2f} GB per rank x {plan['writers']}, {plan['bytes_per_node'] / gb:.1f} "
           f"GB per node" if plan["writers"] > 1 else "written by rank 0")
    lines = [f"checkpoint: {plan['bytes'] / gb:.1f} GB (fp32 weights + AdamW state; {who}); "
             f"{plan['save_s']:.0f} s to write at {plan['assumed_bps'] / gb:g} GB/s per node"]
    if plan["lead_s"] is None:
        return lines
    needs = "leaves no time to write" if plan["needs_bps"] == float("inf") else \
        f"needs {plan['needs_bps'] / gb:.2f} GB/s per node"
    lines[0] += f"; a {plan['lead_s']:.0f} s signal lead {needs}"
    if plan["verdict"] != "ok":
        lines.append(f"warning: {lead_flag} {plan['lead_s']:.0f} is short for this checkpoint: a stop may have to "
                     f"finish a save in flight and then write its own ({2 * plan['bytes_per_node'] / gb:.1f} GB per "
                     f"node) after up to {plan['reach_s']:.0f} s of steps; at {plan['assumed_bps'] / gb:g} GB/s "
                     f"per node give it {suggested_lead(plan)} s or more")
    return lines


def suggested_lead(plan: dict) -> int:
    """lead_needed_s rounded up to a whole 30 s."""
    return int(-(-plan["lead_needed_s"] // 30) * 30)
