"""Atomic, verifiable checkpoint folders, and the single-file layout.

checkpoints/step_XXXXXXX/ holds model.pt (weights and the ProRes alpha buffers), optim.pt (AdamW), trainer.pt +
trainer.json (RNG states, data-stream position and LR scheduler: the tensors, and everything else as JSON),
state.json (step, tokens, alphas, run id, in plain text) and MANIFEST.json (size and sha256 of every file); a
sharded (FSDP) checkpoint holds dcp/ instead of model.pt and optim.pt (study.train.sharded). It is written into a
temporary folder (`begin`), completed and fsynced (`write_files`, `finish`) and renamed into place (`publish`),
so a checkpoint folder either is complete or does not exist; the manifest catches what happens to it afterwards
(a truncated copy, a bad disk). Loading walks from the newest checkpoint back to the first that verifies.
Temporary folders of a save that was killed or hit a full disk are removed when the save fails or the next run
starts (reclaim_temporary). study.train.checkpointer saves and loads through these, for both layouts.
Every .pt file is read with torch.load(weights_only=True): tensors and plain containers only, so a planted or
shared run directory cannot run code when it is resumed or evaluated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from study.errors import CheckpointError
from study.fsutil import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

# A full checkpoint holds model.pt, optim.pt, trainer.pt, trainer.json, state.json and their MANIFEST.json.
TEMPORARY_PREFIXES = (".tmp-", ".latest.tmp-")


def encode_trainer_state(obj) -> tuple[dict, dict]:
    """Trainer state (RNG states, stream positions, ...) -> (tensors for trainer.pt, JSON for trainer.json).

    Tensors and numpy arrays go to the tensor file, referenced from the JSON by name; tuples are marked so that
    random.setstate / np.random.set_state get tuples back. Nothing here needs pickle to be read again.
    """
    tensors: dict = {}

    def enc(x, path):
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().clone()
            return {"__tensor__": path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(x.astype(np.int64) if x.dtype.kind in "ui" else x.copy())
            return {"__ndarray__": path, "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if not all(isinstance(k, str) for k in x):
                raise TypeError(f"trainer state {path}: keys must be strings, got {list(x)[:3]}")
            return {k: enc(v, f"{path}.{k}") for k, v in x.items()}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"trainer state {path}: cannot store a {type(x).__name__} without pickle")

    return tensors, enc(obj, "state")


def decode_trainer_state(tensors: dict, data) -> dict:
    """The inverse of encode_trainer_state."""
    def dec(x):
        if isinstance(x, dict):
            if set(x) == {"__tensor__"}:
                return tensors[x["__tensor__"]]
            if set(x) == {"__ndarray__", "dtype"}:
                return tensors[x["__ndarray__"]].numpy().astype(np.dtype(x["dtype"]))
            if set(x) == {"__tuple__"}:
                return tuple(dec(v) for v in x["__tuple__"])
            return {k: dec(v) for k, v in x.items()}
        if isinstance(x, list):
            return [dec(v) for v in x]
        return x

    return dec(data)


def write_trainer_state(folder: Path, trainer_state: dict) -> None:
    tensors, data = encode_trainer_state(trainer_state)
    with open(Path(folder) / "trainer.pt", "wb") as fh:  # a Python file: a full disk raises OSError, not torch's
        torch.save(tensors, fh)                          # errno-less "file write failed"
    (Path(folder) / "trainer.json").write_text(json.dumps(data) + "\n")


def read_trainer_state(folder: Path) -> dict:
    folder = Path(folder)
    if not (folder / "trainer.json").exists():
        raise CheckpointError(f"checkpoint {folder} has no trainer.json: it was written by an older version whose "
                              f"trainer.pt is a general pickle, which is never loaded (it could run code)")
    tensors = read_file(folder, "trainer.pt")
    try:
        return decode_trainer_state(tensors, json.loads((folder / "trainer.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {folder} cannot be read: {first_line(exc)}") from exc


def layout_problem(ckpt_root: Path) -> str | None:
    """What of the wrong file type stands where a run's checkpoints go (a file named checkpoints, a folder named
    checkpoints/latest), or None: found before training, not at the first save."""
    ckpt_root = Path(ckpt_root)
    if ckpt_root.exists() and not ckpt_root.is_dir():
        return f"{ckpt_root} is a file, not the checkpoints folder"
    latest = ckpt_root / "latest"
    if latest.is_dir() and not latest.is_symlink():
        return f"{latest} is a folder, not the pointer file to the newest checkpoint"
    return None


def reclaim_temporary(ckpt_root: Path) -> list[Path]:
    """Remove what interrupted saves left in checkpoints/ (call only as the run's owner); returns what went."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    gone = [p for p in ckpt_root.iterdir() if p.name.startswith(TEMPORARY_PREFIXES)]
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return gone


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"




def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A binary file that hashes what is written through it: the manifest's sha256 without reading the file back."""

    def __init__(self, fh, name: str):
        self.fh, self.name, self.digest, self.bytes = fh, name, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.bytes += len(data)
        try:
            return self.fh.write(data)
        except OSError as exc:  # torch turns it into a RuntimeError whose context this is: name the file in it
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, self.name) from exc
            raise

    def flush(self) -> None:
        self.fh.flush()

    def __repr__(self) -> str:  # names the file in an OSError's message, like an open file's repr
        return f"<checkpoint file {self.name}>"


def write_files(tmp: Path, objects: dict[str, object]) -> dict:
    """torch.save each of `objects` ({file name: object}) into folder `tmp`, fsynced; returns their manifest
    entries ({name: {'bytes', 'sha256'}}), hashed while written. On failure the folder is removed at once (a full
    disk gives its space back now, not at the next start)."""
    known = {}
    try:
        for name, obj in objects.items():
            with open(tmp / name, "wb") as fh:
                writer = _HashingWriter(fh, str(tmp / name))
                torch.save(obj, writer)
                fh.flush()
                os.fsync(fh.fileno())
            known[name] = {"bytes": writer.bytes, "sha256": writer.digest.hexdigest()}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return known


def finish(tmp: Path, trainer_state: dict, state: dict, known: dict | None = None) -> None:
    """Complete a checkpoint folder whose weights are written (model.pt/optim.pt, or a sharded dcp/ folder):
    trainer state, state.json and a MANIFEST of every file, all on disk before publish() makes it visible.
    `known`: manifest entries of files hashed already (while written, or by the rank that wrote them); the rest
    are hashed here. On failure the folder is removed at once."""
    known = known or {}
    try:
        write_trainer_state(tmp, trainer_state)
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
        manifest = {}
        for p in files:
            name = str(p.relative_to(tmp))
            manifest[name] = known.get(name) or {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
        for path in (*(p for p in files if str(p.relative_to(tmp)) not in known), tmp / "MANIFEST.json"):
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        for folder in sorted({p.parent for p in files} - {tmp}):
            _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def begin(ckpt_root: Path, step: int) -> Path:
    """A fresh temporary folder for checkpoint `step` (its name starts with a TEMPORARY_PREFIXES entry, so a
    save that dies half-way is reclaimed by the next start)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish(ckpt_root: Path, tmp: Path, step: int, keep: int) -> Path:
    """Rename the complete folder `tmp` into place as checkpoint `step`, point checkpoints/latest at it and keep
    the newest `keep`. Shared by the single-file (save) and the sharded (study.train.sharded) layouts."""
    final = ckpt_root / step_dir_name(step)
    if final.exists():  # a checkpoint of the same step from an earlier attempt: replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(ckpt_root / "latest", final.name + "\n", fsync=False)  # the folder's fsync follows
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


def _manifest_problem(manifest) -> str | None:
    """What is wrong with the shape of a MANIFEST.json ({relative file name: {"bytes": n, "sha256": hex}}), or None."""
    if not isinstance(manifest, dict) or not manifest:
        return "MANIFEST.json is not a non-empty {file: {bytes, sha256}} object"
    for name, entry in manifest.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"MANIFEST.json names {name!r}, outside the checkpoint"
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or isinstance(entry["bytes"], bool) \
                or not isinstance(entry.get("sha256"), str):
            return f"MANIFEST.json's entry for {name!r} is not {{bytes, sha256}}"
    return None


def verify(path: Path) -> str | None:
    """None if checkpoint folder `path` is complete and matches its manifest, else what is wrong (a manifest of
    the wrong shape too: the checkpoint is skipped like any other damaged one)."""
    manifest_path = Path(path) / "MANIFEST.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return "no MANIFEST.json"
    except (ValueError, UnicodeDecodeError):
        return "MANIFEST.json is not valid JSON"
    except OSError as exc:
        return f"MANIFEST.json cannot be read ({exc.strerror or exc})"
    problem = _manifest_problem(manifest)
    if problem:
        return problem
    for name, entry in manifest.items():
        file = Path(path) / name
        if not file.is_file():
            return f"{name} is missing" if not file.exists() else f"{name} is not a file"
        try:
            size = file.stat().st_size
            if size != entry["bytes"]:
                return f"{name} has {size} bytes, the manifest says {entry['bytes']} (truncated?)"
            if sha256_file(file) != entry["sha256"]:
                return f"{name} does not match its checksum"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
    return None


def latest_valid(ckpt_root: Path, *, warn=None) -> Path | None:
    """The newest checkpoint that verifies; each broken newer one is reported and skipped."""
    for path in reversed(list_checkpoints(ckpt_root)):
        problem = verify(path)
        if problem is None:
            return path
        (warn or log.warning)(f"checkpoint {path} is unusable ({problem}); falling back to an earlier one")
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


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`: torch's errors run to many lines, a user's error is one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def read_file(path: Path, name: str):
    """One .pt file of a verified checkpoint folder, tensors only (weights_only): a file that verified but does
    not unpickle is reported in one line, not as a traceback from deep inside torch."""
    try:
        return torch.load(Path(path) / name, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {first_line(exc)}") from exc


def load_into(module, state, path: Path, what: str = "model", **kwargs):
    """`module.load_state_dict(state)` (a model or an optimizer), a state that does not fit (another shape, not a
    state dict) reported in one line naming the checkpoint."""
    try:
        return module.load_state_dict(state, **kwargs)
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this run's {what}: {first_line(exc)}") from exc


def read_state(path: Path) -> dict:
    """state.json of a checkpoint folder (step, tokens, alphas, run id), checked for the step and tokens."""
    try:
        state = json.loads((Path(path) / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {first_line(exc)}") from exc
    if not isinstance(state, dict) or not all(isinstance(state.get(k), int) and not isinstance(state[k], bool)
                                              for k in ("step", "tokens")):
        raise CheckpointError(f"checkpoint {path} cannot be read: state.json is not an object with an integer "
                              f"step and tokens")
    return state
