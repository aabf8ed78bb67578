"""Shared helpers of the benchmark scripts: interleaved timing with medians, and the JSON result file
(device, versions, date, command line, numbers) under benchmarks/results/."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()} ({os.cpu_count()} cpus, {torch.get_num_threads()} torch threads)"


def versions(*extra: str) -> dict:
    """Python, torch and transformers versions, plus those of the `extra` modules (None when not installed)."""
    import importlib

    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", *extra):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            out[name] = None
    return out


def cpu_seconds(*, children: bool = False) -> float:
    """User + system CPU seconds of this process, all threads (and of its reaped child processes with `children`):
    what a build costs whatever the machine's load."""
    import resource

    usages = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if children else [])
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, usages))


def sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_step(forward, opt, x, y, *, before: Callable[[], None] | None = None) -> Callable[[], None]:
    """One training step on a fixed batch, as every benchmark times it: bf16 autocast on CUDA (fp32 on CPU),
    cross-entropy in fp32, optimizer step, gradients set to None. `forward(x)` gives logits; `before()` runs first
    in each step (ProRes: the trainer's set_alphas after every step)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if x.is_cuda else contextlib.nullcontext

    def step():
        if before is not None:
            before()
        with autocast():
            out = forward(x)
            loss = F.cross_entropy(out.float().view(-1, out.size(-1)), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def interleaved(fns: dict[str, Callable[[], None]], *, reps: int, warmup: int = 1, device: str = "cpu") -> dict:
    """Time each fn `reps` times, round-robin with the order reversed every other round (A B, B A, ...) so
    that load drifts and first-in-round effects hit all alike; medians in seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    for rep in range(reps):
        for name, fn in (items if rep % 2 == 0 else items[::-1]):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "all_s": v} for k, v in times.items()}


def write_result(name: str, device: str, numbers: dict, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "device": device_name(device), "versions": versions(),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), "results": numbers}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    return path
