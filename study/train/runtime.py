"""What the trainer asks of the machine: device, precision, peak FLOP/s, memory, RNG state, storage errors.

Each is decided once at the start of a run (or captured at a checkpoint) so that the loop reads as training.
"""

from __future__ import annotations

import errno
import os
import random

import numpy as np
import torch

from study.cost import device_peak_flops
from study.errors import ConfigError, StorageError
from study.train.distributed import Dist

__all__ = ["wants_cuda", "select_device", "precision", "peak_flops", "rng_state", "set_rng_state", "check_memory",
           "storage_error"]


def wants_cuda(train_cfg) -> bool:
    """Whether the run trains on GPUs (train.device cuda, or auto with a GPU visible)."""
    return train_cfg.device == "cuda" or (train_cfg.device == "auto" and torch.cuda.is_available())


def select_device(train_cfg) -> torch.device:
    """The run's device: the CPU, or the current GPU (a launched process's own GPU: study.train.distributed
    selects it from the local rank before starting the process group)."""
    if not wants_cuda(train_cfg):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("CUDA requested but no GPU is visible", key="train.device")
    return torch.device("cuda", torch.cuda.current_device())


def precision(train_cfg, device: torch.device) -> str:
    if train_cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"  # bf16 is many times slower than fp32 on CPUs
    return train_cfg.precision


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return device_peak_flops(name)  # study.cost holds the one peak-FLOP/s table


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_memory(cfg, device: torch.device, precision: str, d: Dist) -> None:
    """Refuse a model that cannot fit this device (GPU memory, or the host's RAM on CPU) before allocating it:
    a typo such as d_model=1e9 must be one clear line, not an out-of-memory crash minutes later."""
    from study.model import memory_estimate

    need = memory_estimate(cfg.model, micro_batch=cfg.train.micro_batch, world_size=d.world,
                           parallelism=cfg.train.parallelism, precision=precision,
                           activation_checkpointing=cfg.train.activation_checkpointing)["total_bytes"]
    if device.type == "cuda":
        have, where = torch.cuda.get_device_properties(device).total_memory, f"the GPU ({device})"
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        need *= d.world  # CPU processes share the host
        where = "this host's memory"
    if need > have:
        m = cfg.model
        raise ConfigError(f"the model (d_model={m.d_model}, n_layers={m.n_layers}, vocab_size={m.vocab_size}, "
                          f"seq_len={m.seq_len}, micro_batch={cfg.train.micro_batch}) needs about "
                          f"{need / 2**30:,.1f} GiB to train but {where} has {have / 2**30:,.1f} GiB; use a "
                          f"smaller model or micro_batch", key="model")


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
_IN_THE_WAY_ERRNOS = {errno.EISDIR, errno.ENOTDIR}  # a folder where a file belongs, or the reverse


def _os_cause(exc: BaseException) -> OSError | None:
    """The filesystem error behind `exc`: itself, or one it was raised from or while handling. torch.save turns
    the OSError of a full disk into a RuntimeError ("unexpected pos ...") whose context it is."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS | _IN_THE_WAY_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def storage_error(exc: BaseException) -> StorageError | None:
    """A filesystem error (full, read-only, permissions, quota, a folder or file in the way), also when torch
    raised it as a RuntimeError, as one line saying which path and what to do."""
    if isinstance(exc, StorageError):
        return exc
    cause = _os_cause(exc)
    if cause is None:
        return None
    where = cause.filename or "the run directory"
    if cause.errno in _IN_THE_WAY_ERRNOS:
        return StorageError(f"cannot write {where}: {cause.strerror or cause} (a folder where a file belongs, or "
                            f"the reverse); move it away, then run the same command again: it resumes from the "
                            f"last checkpoint")
    return StorageError(f"cannot write {where}: {cause.strerror or cause}; free space or fix permissions there (or "
                        f"choose another --out), then run the same command again: it resumes from the last "
                        f"checkpoint")
