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

