"""How the trainer wraps the model for data parallelism: nothing (one process), DDP, or FSDP2; plus per-block
activation checkpointing and torch.compile.

    w = wrap(model, train_cfg, dist, device)
    w.module      what the optimizer sees (the model itself; under FSDP2 its parameters are sharded DTensors)
    w.forward     the training forward (compiled when train_cfg.compile)
    w.no_sync(is_last)   context manager for gradient accumulation: gradients are synchronised only on the
                         last micro-batch (DDP: no_sync(); FSDP2: set_requires_gradient_sync(False/True))
    w.kind        'none' | 'ddp' | 'fsdp'

FSDP2 (`torch.distributed.fsdp.fully_shard`) shards each Block, then the root. It shards parameters only:
the ProRes alpha buffers stay the very same plain fp32 tensors (checked here), so Transformer.set_alphas keeps
updating them in place on every rank. fully_shard changes the module in place, so the trainer's `self.model`
is `w.module` (the same object) and its parameters are the sharded DTensors: build the optimizer AFTER wrap,
from `w.module`. Gradients are averaged over ranks by the reduce-scatter, like DDP.

Meta-device build (`build_sharded`, torchtitan's pattern): under FSDP each rank builds the model on the meta
device, shards it, allocates only its own shard (`to_empty`) and fills it, so a rank never holds the full fp32
model (7B: 27 GB per rank, 8 ranks a node). The values equal today's CPU build exactly (same init fingerprint):
the construction's RNG draws are replayed on a scratch tensor per nn.init call (meta tensors draw nothing), then
`init_weights` runs unchanged on the sharded model while every parameter it reads (`module.weight`) is a
full-size CPU scratch tensor, which draws exactly as the CPU build did; when init moves on, the rank's rows of
the scratch are copied into its shard and the scratch is dropped. Peak extra memory: one full parameter (the
embedding or head); benchmarks/fsdp_build_memory.py measures the peak per rank against the full build.

torch.compile under FSDP (torchtitan's pattern): each Block is compiled in place (`Block.compile()`, so
parameter names and state_dict keys stay those of the eager model) BEFORE fully_shard, and the root (embedding,
final norm, head) runs eagerly. A whole-model compile would have to trace FSDP2's all-gather / reduce-scatter
hooks between the blocks; per block, dynamo compiles the block's own computation and FSDP's hooks run eagerly
around it, so communication and compiled compute overlap as in eager FSDP. Every Block has the same code, so one
graph serves them all, and the ProRes alpha is a buffer (an input of the graph): changing it does not recompile.
Without FSDP the whole model is compiled as before.

Activation checkpointing recomputes each Block's forward in the backward pass (torch.utils.checkpoint,
non-reentrant), applied by replacing the Block instance's forward, so parameter names, state_dict keys and
`model.layers[i].residual` are unchanged; it works with or without FSDP (the FSDP hooks stay outside).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from study.errors import ConfigError


@dataclass
class Wrapped:
    module: nn.Module
    forward: Callable
    kind: str
    ddp: nn.Module | None = None

    def no_sync(self, is_last: bool):
        if self.kind == "ddp" and not is_last:
            return self.ddp.no_sync()
        if self.kind == "fsdp":
            self.module.set_requires_gradient_sync(is_last)
        return contextlib.nullcontext()


def _checkpointed_forward(forward, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint
    if not torch.is_grad_enabled():  # eval / probes: nothing to save for backward
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute every block of `model.layers` in the backward pass (idempotent)."""
    for block in model.layers:
        if getattr(block, "_study_checkpointed", False):
            continue
        block.forward = functools.partial(_checkpointed_forward, block.forward)
        block._study_checkpointed = True


def _buffers_by_name(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b for name, b in model.named_buffers()}


class _ReplayInitDraws(torch.overrides.TorchFunctionMode):
    """While a model is constructed on the meta device: run every nn.init call on a CPU scratch tensor of the same
    shape and dtype too, so the CPU RNG advances exactly as a CPU construction would (meta draws nothing)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = _first_tensor(args, kwargs)
        in_place_init = getattr(func, "__module__", None) == "torch.nn.init" and func.__name__.endswith("_")
        if in_place_init and getattr(target, "is_meta", False):
            _call_on(func, args, kwargs, torch.empty(target.shape, dtype=target.dtype, device="cpu"))
            return target
        return func(*args, **kwargs)


def _first_tensor(args, kwargs):
    """The tensor an nn.init function or in-place method works on (nn.init passes it as `tensor=`)."""
    return args[0] if args else kwargs.get("tensor")


def _call_on(func, args, kwargs, scratch):
    """func(...) with its target tensor (see _first_tensor) replaced by `scratch`."""
    if args:
        return func(scratch, *args[1:], **kwargs)
    return func(*args, **{**kwargs, "tensor": scratch})


class _InitIntoShards:
    """While init_weights runs on a sharded model, reading a parameter (module.weight) gives a full-size CPU
    scratch tensor instead, so the init code runs unchanged and draws exactly as on the CPU build; when init
    moves on to the next parameter, this rank's rows of the scratch are copied into its shard."""

    def __init__(self, model: nn.Module):
        self.model, self.done = model, set()
        self.current: tuple[str, torch.Tensor, torch.Tensor] | None = None  # (name, sharded param, full scratch)
        self._saved: list[tuple[nn.Module, dict]] = []

    def scratch_for(self, name: str, param: torch.Tensor) -> torch.Tensor:
        if self.current is not None and self.current[0] == name:
            return self.current[2]
        self.flush()
        if name in self.done:
            raise RuntimeError(f"meta build: init read {name} again after moving on; cannot materialise it")
        self.current = (name, param, torch.empty(param.shape, dtype=param.dtype, device="cpu"))
        return self.current[2]

    def flush(self) -> None:
        if self.current is None:
            return
        from torch.distributed.tensor import Shard

        name, param, full = self.current
        if tuple(param.placements) != (Shard(0),):
            raise RuntimeError(f"meta build: unexpected FSDP placement {param.placements} of {name}")
        mesh, local = param.device_mesh, param.to_local()
        chunks = torch.chunk(full, mesh.size(), dim=0)
        rank = mesh.get_local_rank()
        mine = chunks[rank] if rank < len(chunks) else full[:0]
        if tuple(mine.shape) != tuple(local.shape):
            raise RuntimeError(f"meta build: shard of {name} is {tuple(local.shape)}, expected {tuple(mine.shape)}")
        with torch.no_grad():
            local.copy_(mine)
        self.done.add(name)
        self.current = None

    def __enter__(self):
        for prefix, module in self.model.named_modules():
            if module._parameters:
                self._saved.append((module, module._parameters))
                module.__dict__["_parameters"] = _LazyFull(module._parameters, prefix, self)
        return self

    def __exit__(self, *exc):
        for module, params in self._saved:
            module.__dict__["_parameters"] = params
        self._saved.clear()
        if exc[0] is None:
            self.flush()
        return False


class _LazyFull(dict):
    """A module's parameter dict whose item lookup (Module.__getattr__) returns the builder's full scratch."""

    def __init__(self, params: dict, prefix: str, builder: _InitIntoShards):
        super().__init__(params)
        self.prefix, self.builder = (prefix + "." if prefix else ""), builder

    def __getitem__(self, key):
        return self.builder.scratch_for(self.prefix + key, dict.__getitem__(self, key))


def build_sharded(model_cfg, train_cfg, device: torch.device, *, precision: str = "fp32",
                  compile_backend: str = "inductor") -> nn.Module:
    """The FSDP2 model of `model_cfg`, built on meta and materialised shard by shard on `device`, with exactly the
    values of `study.model.build_model` on CPU under the same seed (the caller seeds the torch RNG first)."""
    from study.model import build_model
    from study.model.blocks import Rotary

    with _ReplayInitDraws():
        model = build_model(model_cfg, device="meta")
    _return_freed_memory()  # the replay's scratch tensors: glibc keeps freed heap pages unless asked
    shard(model, train_cfg, device, precision, compile_backend=compile_backend)
    model.to_empty(device=device)
    with _InitIntoShards(model) as builder:
        model.init_weights()
    missing = [n for n, _ in model.named_parameters() if n not in builder.done]
    if missing:
        raise RuntimeError(f"meta build: init_weights left {missing[:3]} unset")
    for module in model.modules():  # non-persistent tables computed in __init__ (nothing random)
        if isinstance(module, Rotary):
            fresh = Rotary(module.cos.shape[1], module.cos.shape[0], model_cfg.rope_theta)
            module.cos.copy_(fresh.cos)
            module.sin.copy_(fresh.sin)
    return model


def _return_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc malloc_trim; a no-op elsewhere), so that the scratch tensors
    of the meta build do not stay in the rank's resident memory."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def _is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def compile_blocks(model: nn.Module, backend: str = "inductor") -> None:
    """Compile every Block of `model.layers` in place (nn.Module.compile: names unchanged; idempotent)."""
    for block in model.layers:
        if getattr(block, "_study_compiled", None) is None:
            block.compile(backend=backend)
            block._study_compiled = backend


def shard(model: nn.Module, train_cfg, device: torch.device, precision: str, *,
          compile_backend: str = "inductor") -> nn.Module:
    """fully_shard each Block, then the root (in place; a model already sharded is returned as is). With
    train_cfg.compile, each Block is compiled first (see the module docstring)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if _is_sharded(model):
        return model
    if train_cfg.compile:
        compile_blocks(model, compile_backend)

    if precision == "bf16" and device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        mp = MixedPrecisionPolicy()
    before = _buffers_by_name(model)
    for block in model.layers:
        fully_shard(block, mp_policy=mp, reshard_after_forward=True)
    fully_shard(model, mp_policy=mp, reshard_after_forward=True)
    after = _buffers_by_name(model)
    moved = [n for n, b in before.items() if after.get(n) is not b]
    if moved:  # set_alphas writes into the original buffers: they must still be the ones the forward reads
        raise RuntimeError(f"fully_shard replaced buffers {moved[:3]}: ProRes alphas would no longer update")
    return model


def wrap(model: nn.Module, train_cfg, dist, device: torch.device, *, precision: str = "fp32",
         compile_backend: str = "inductor") -> Wrapped:
    """Wrap `model` per train_cfg.parallelism / activation_checkpointing / compile for process group `dist`
    (a study.train.distributed.Dist). One process: no wrapper whatever the parallelism. Compiled: per Block
    under FSDP (before sharding), else the whole forward. `compile_backend`: torch.compile's backend (tests use
    aot_eager; inductor builds C++ kernels for tens of seconds on CPU)."""
    if train_cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    kind = "none"
    ddp = None
    if dist.active:
        kind = train_cfg.parallelism
        if kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device.index] if device.type == "cuda" else None
            ddp = DDP(model, device_ids=ids, broadcast_buffers=False)
        elif kind == "fsdp":
            if precision == "bf16-pure":
                raise ConfigError("FSDP with precision bf16-pure is not supported: use bf16 (the mixed-precision "
                                  "policy keeps fp32 master weights)", key="train.precision")
            shard(model, train_cfg, device, precision, compile_backend=compile_backend)
        else:
            raise ConfigError(f"unknown parallelism {kind!r}", key="train.parallelism")
    forward = ddp if ddp is not None else model
    if train_cfg.compile and kind != "fsdp":  # under FSDP the Blocks were compiled before fully_shard
        forward = torch.compile(forward, backend=compile_backend)
    return Wrapped(module=model, forward=forward, kind=kind, ddp=ddp)


def grad_norm_value(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ over DTensor parameters returns a replicated DTensor: the plain local tensor."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
