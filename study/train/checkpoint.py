"""Atomic, verifiable checkpoints.

checkpoints/step_XXXXXXX/ holds model.pt (weights and the ProRes alpha buffers), optim.pt (AdamW and LR
scheduler), trainer.pt (RNG states, data-stream positions), state.json (step, tokens, alphas, in plain text) and
MANIFEST.json (size and sha256 of every file). It is written into a temporary folder and renamed into place, so
a checkpoint folder either is complete or does not exist; the manifest catches what happens to it afterwards
(a truncated copy, a bad disk). Loading walks from the newest checkpoint back to the first that verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from study.errors import CheckpointError

FILES = ("model.pt", "optim.pt", "trainer.pt", "state.json")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(ckpt_root: Path, step: int, *, model_state: dict, optim_state: dict, trainer_state: dict,
         state: dict, keep: int) -> Path:
    """Write checkpoint `step` atomically, point checkpoints/latest at it, keep the newest `keep`."""
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / step_dir_name(step)
    tmp = ckpt_root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(model_state, tmp / "model.pt")
    torch.save(optim_state, tmp / "optim.pt")
    torch.save(trainer_state, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    manifest = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in FILES}
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in (*FILES, "MANIFEST.json"):
        with open(tmp / name, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # a checkpoint of the same step from an earlier attempt: replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = ckpt_root / f".latest.tmp-{os.getpid()}"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, ckpt_root / "latest")
    _fsync_dir(ckpt_root)
    _prune(ckpt_root, keep)
    return final


def _prune(ckpt_root: Path, keep: int) -> None:
    for path in list_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint folders, oldest first (temporary folders of interrupted saves are ignored)."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def verify(path: Path) -> str | None:
    """None if checkpoint folder `path` is complete and matches its manifest, else what is wrong."""
    manifest_path = Path(path) / "MANIFEST.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return "no MANIFEST.json"
    except json.JSONDecodeError:
        return "MANIFEST.json is not valid JSON"
    for name, entry in manifest.items():
        file = Path(path) / name
        if not file.exists():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != entry["bytes"]:
            return f"{name} has {size} bytes, the manifest says {entry['bytes']} (truncated?)"
        if _sha256(file) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def latest_valid(ckpt_root: Path, *, warn=lambda msg: print(msg, file=sys.stderr)) -> Path | None:
    """The newest checkpoint that verifies; each broken newer one is reported and skipped."""
    for path in reversed(list_checkpoints(ckpt_root)):
        problem = verify(path)
        if problem is None:
            return path
        warn(f"study: checkpoint {path} is unusable ({problem}); falling back to an earlier one")
    return None


def find(ckpt_root: Path, step: int | str = "latest") -> Path:
    """The checkpoint folder for `step` ('latest' = newest valid), verified; CheckpointError otherwise."""
    if step == "latest":
        path = latest_valid(ckpt_root)
        if path is None:
            raise CheckpointError(f"no usable checkpoint under {ckpt_root}")
        return path
    path = Path(ckpt_root) / step_dir_name(int(step))
    if not path.is_dir():
        have = ", ".join(p.name[5:].lstrip("0") or "0" for p in list_checkpoints(ckpt_root)) or "none"
        raise CheckpointError(f"no checkpoint for step {step} under {ckpt_root} (steps on disk: {have})")
    problem = verify(path)
    if problem:
        raise CheckpointError(f"checkpoint {path} is unusable: {problem}")
    return path


def load_files(path: Path, *, map_location="cpu") -> dict:
    """Read a verified checkpoint folder: {'model', 'optim', 'trainer', 'state'}."""
    path = Path(path)
    try:
        return {
            "model": torch.load(path / "model.pt", map_location=map_location, weights_only=True),
            "optim": torch.load(path / "optim.pt", map_location=map_location, weights_only=True),
            "trainer": torch.load(path / "trainer.pt", map_location=map_location, weights_only=False),
            "state": json.loads((path / "state.json").read_text()),
        }
    except Exception as exc:  # a file that verified but does not unpickle: report it, don't crash deep inside
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc


@dataclass
class LoadedRun:
    cfg: object
    model: torch.nn.Module
    tokenizer: object
    step: int
    run_dir: Path


def load_for_eval(run_dir, step: int | str = "latest", device: str | torch.device = "cpu") -> LoadedRun:
    """The model of a run at a checkpoint, with its weights and ProRes alphas, in eval mode."""
    from study.data import build_tokenizer
    from study.model import build_model
    from study.results import RunDir

    rd = RunDir(run_dir)
    if not rd.exists():
        raise CheckpointError(f"{rd.path} is not a run directory (no config.yaml)")
    cfg = rd.read_config()
    path = find(rd.checkpoints, step)
    from study.train import sharded  # FSDP runs write sharded (torch.distributed.checkpoint) model state
    model_state = (sharded.load_full_model_state(path) if sharded.is_sharded(path)
                   else torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    model = build_model(cfg.model)
    missing, unexpected = model.load_state_dict(model_state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the run's model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    model.to(device).eval()
    tokenizer = build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)
    return LoadedRun(cfg=cfg, model=model, tokenizer=tokenizer, step=int(state["step"]), run_dir=rd.path)
