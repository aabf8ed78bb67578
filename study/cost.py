"""What a run costs: GPU peak FLOP/s by device, MFU, the GPU-hour and memory estimate of one run, and the disk
it writes (`disk_plan`; `store_disk` for its token store).

The one table of peak FLOP/s in the study: `study grid show` estimates GPU-hours from it, the trainer divides
measured FLOP/s by it for the MFU it logs, and benchmarks/throughput.py reports MFU against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from study.config import RunConfig
from study.data.store_manifest import tokens_needed
from study.data.tokens import token_dtype
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

__all__ = ["PEAK_FLOPS", "DEFAULT_PEAK_FLOPS", "PEAK_NOTE", "DEFAULT_MFU", "device_peak_flops", "disk_plan",
           "estimate", "store_disk"]


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


# Disk. Sizes follow from the config; the few constants below are the containers' own bytes (tests/test_cost.py
# checks every formula against the files of a real tiny run and a real tiny store).
FP32, HALF = 4, 2
CHECKPOINT_BYTES_PER_PARAM = FP32 * 3  # fp32 weights + AdamW's exp_avg and exp_avg_sq (the trainer's state: KB)
TORCH_FILE_OVERHEAD = 2048  # a torch.save zip container around one tensor: about 1.6 KB
NPY_HEADER = 128  # a .npy file's header (a store shard's document index)
FLOAT_CHARS = 18  # a float in a jsonl row: json writes a double's shortest repr, typically 17 significant digits
# One row of each jsonl file, every number at its typical width (the keys are the writers' own: study/train/
# loop.py's metrics row, study/train/probes.py's probe row, study/perplexity.py's eval row).
_F = float("0." + "1" * (FLOAT_CHARS - 2))
_METRICS_ROW = {"step": 0, "loss": _F, "lr": _F, "grad_norm": _F, "tokens": 0, "tokens_per_s": _F, "mfu": _F,
                "alpha": None, "time": 1e9 + _F}
_PROBE_ROW = {"step": 0, "layer": 0, "act_norm": _F, "branch_norm_attn": _F, "branch_norm_ffn": _F, "alpha": _F}
_EVAL_ROW = {"step": 0, "dataset": "", "split": "", "loss": _F, "ppl": _F, "tokens": 0, "seq_len": 0,
             "source": "train"}


def _row_bytes(row: dict, **values) -> int:
    import json

    return len(json.dumps({**row, **values})) + 1  # and its newline


def _steps_where(steps: int, *everies: int) -> int:
    """How many of the steps 1..steps are a multiple of one of `everies` (0: never) or the last one."""
    marks = {steps}
    for every in everies:
        if every:
            marks.update(range(every, steps + 1, every))
    return len(marks)


def disk_plan(cell: Cell | RunConfig) -> dict:
    """Bytes one run writes: {'checkpoint' (one), 'checkpoints' (the kept ones), 'checkpoints_peak' (while a
    save is written, before the oldest is pruned), 'probes', 'metrics', 'eval', 'rows': row counts per file}.

    checkpoint = 12 bytes per parameter (fp32 weights, AdamW's two fp32 moments), either layout; probes: one
    probes/step_*.pt per probe step holding [L, N, 2d] half-precision branch outputs (N = probe_sequences x
    min(probe_len, seq_len) tokens) plus L probes.jsonl rows; metrics.jsonl: one row per step, the alphas (L
    floats) on the last row of every write; eval.jsonl: one row per held-out evaluation.
    """
    cfg = cell if isinstance(cell, RunConfig) else cell.config
    from study.model import info  # torch loads only when asked

    t, m, steps = cfg.train, cfg.model, cfg.train.steps
    L = m.n_layers
    one = info(m)["params"] * CHECKPOINT_BYTES_PER_PARAM + 3 * TORCH_FILE_OVERHEAD
    keep = t.keep_checkpoints if t.keep_checkpoints > 0 else _steps_where(steps, t.ckpt_every)
    probe_steps = 1 + _steps_where(steps, t.probe_every) if t.probe_every else 0  # step 0, every probe_every, last
    tokens = probe_steps and t.probe_sequences * min(t.probe_len, m.seq_len)
    probe_pt = L * tokens * 2 * m.d_model * HALF + TORCH_FILE_OVERHEAD
    evals = (steps // cfg.eval.every if cfg.eval.every else 0) + \
        (1 if cfg.eval.at_end and not (cfg.eval.every and steps % cfg.eval.every == 0) else 0)
    writes = _steps_where(steps, t.log_every, cfg.eval.every, t.probe_every, t.ckpt_every)  # metrics flushes
    wide = {"step": steps, "tokens": steps * t.global_batch * m.seq_len}
    metrics = steps * _row_bytes(_METRICS_ROW, **wide) + writes * L * (FLOAT_CHARS + 2)  # ", " between alphas
    probes = probe_steps * (probe_pt + L * _row_bytes(_PROBE_ROW, step=steps, layer=L))
    from study.perplexity import dataset_label

    dataset, split = dataset_label(cfg.data)
    eval_bytes = evals * _row_bytes(_EVAL_ROW, step=steps, dataset=dataset, split=split, tokens=cfg.eval.tokens,
                                    seq_len=m.seq_len)
    return {"checkpoint": one, "checkpoints": keep * one, "checkpoints_peak": (keep + 1) * one, "probes": probes,
            "metrics": metrics, "eval": eval_bytes,
            "rows": {"metrics.jsonl": steps, "probes.jsonl": probe_steps * L, "probes/*.pt": probe_steps,
                     "eval.jsonl": evals}}


def store_disk(cells) -> list[dict]:
    """The token stores a list of cells (or RunConfigs) trains from, one entry each: {'path', 'cells', 'bytes',
    'train_tokens', 'prepared', 'bytes_per_token'}. A prepared store: its shards' bytes from its manifest. Else
    what it will hold: the largest cell's training tokens (study.data.store_manifest.tokens_needed, what
    `study data prepare --max-tokens` defaults to) plus the held-out tokens (eval.tokens of an eval split, of
    which the whole split is stored; else heldout_fraction of the documents read), at 2 bytes per token below
    65,536 vocabulary entries, else 4, without the document index (8 bytes per document); None when the whole
    source goes in (pad packing: no token cap)."""
    import json

    from study.data.store_manifest import store_path

    out: dict[str, dict] = {}
    for cell in cells:
        cfg = cell if isinstance(cell, RunConfig) else cell.config
        if not cfg.data.store:
            continue
        path = store_path(cfg.data, cfg.model.vocab_size)
        entry = out.setdefault(str(path), {"path": str(path), "cells": 0, "needed": 0, "heldout": 0,
                                           "bytes_per_token": np.dtype(token_dtype(cfg.model.vocab_size)).itemsize})
        entry["cells"] += 1
        need = tokens_needed(cfg)
        entry["needed"] = None if need is None or entry["needed"] is None else max(entry["needed"], need)
        frac = cfg.data.heldout_fraction  # held out by document hash: that share of what the cap reads
        held = cfg.eval.tokens if cfg.data.source == "hf" and cfg.data.eval_split else \
            (need or 0) * frac / max(1e-9, 1 - frac)
        entry["heldout"] = max(entry["heldout"], int(held))
    for entry in out.values():
        manifest = Path(entry["path"]) / "manifest.json"
        entry["prepared"] = manifest.exists()
        if entry["prepared"]:
            splits = json.loads(manifest.read_text())["splits"]
            entry["train_tokens"] = splits["train"]["tokens"]
            entry["bytes"] = sum(s["bytes"] + 8 * (s["documents"] + 1) + NPY_HEADER for split in splits.values()
                                 for s in split["shards"])  # tokens, and each shard's int64 document index
        else:
            entry["train_tokens"] = entry["needed"]
            entry["bytes"] = None if entry["needed"] is None else \
                (entry["needed"] + entry["heldout"]) * entry["bytes_per_token"]
    return list(out.values())
