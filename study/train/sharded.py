"""Sharded checkpoints of FSDP2 runs through torch.distributed.checkpoint (DCP): the 'sharded' layout of
study.train.checkpointer, in the atomic folder scheme of study.train.checkpoint.

checkpoints/step_XXXXXXX/ of a sharded run holds
    dcp/            model + optimizer state written by every rank (`.metadata` plus __<rank>_<n>.distcp per rank)
    trainer.pt      RNG states and the LR scheduler (rank 0): tensors only (checkpoint.write_trainer_state)
    trainer.json    the rest of that state (data-stream position, counters) as JSON
    state.json      step, tokens, alphas, ...
    MANIFEST.json   size and sha256 of every file above, dcp/ files included
All ranks write into ONE temporary folder whose name rank 0 chooses; once every rank's shards are written
(`write`, each rank hashing its own files) rank 0 writes the rest and renames the folder into place, so a sharded
checkpoint too either is complete or does not exist, and checkpoint.verify / latest_valid / find work on it
unchanged.

`load_full_model_state(path)` reads the model of a sharded checkpoint in ONE process without a process group
(`study eval` uses it through checkpointer.model_state).

Safe loading: torch.distributed.checkpoint unpickles dcp/.metadata with plain `pickle.load`, so before handing a
folder to it, `check_metadata` reads that file with an unpickler that only knows the classes DCP metadata is
made of (its metadata dataclasses, torch.Size, dtypes, paths) and refuses anything else; tensor and byte
payloads DCP reads with weights_only=True itself; trainer.pt is tensors only.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from study.errors import CheckpointError
from study.fsutil import sha256_file

DCP_DIR = "dcp"
_METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem",
                     "torch.distributed.checkpoint._extension")
_METADATA_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
                     ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "Path"),
                     ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module in _METADATA_MODULES or (module, name) in _METADATA_GLOBALS
                or (module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout)))):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which checkpoint metadata never needs")


def check_metadata(path) -> None:
    """Refuse a sharded checkpoint whose dcp/.metadata pickle would do more than build DCP metadata."""
    meta = Path(path) / DCP_DIR / ".metadata"
    try:
        with open(meta, "rb") as fh:
            _MetadataUnpickler(fh).load()
    except Exception as exc:
        raise CheckpointError(f"sharded checkpoint {path}: {meta.name} is not safe to load "
                              f"({type(exc).__name__}: {exc}); refusing to unpickle it") from None


def is_sharded(path) -> bool:
    return (Path(path) / DCP_DIR).is_dir()


def state_dicts(model, optimizer) -> dict:
    """{'model', 'optim'}: this rank's shards (DTensors) of the model and AdamW state, as DCP saves them."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def write(tmp: Path, staged: dict, *, rank: int, group) -> dict:
    """Collective over `group`: write this rank's shards of `staged` (state_dicts() copied to host memory) into
    tmp/dcp/; returns the manifest entries of the files this rank wrote (DCP names them __<rank>_<n>.distcp),
    hashed here so that rank 0 does not read every rank's files back; rank 0's finish() hashes the rest."""
    import torch.distributed.checkpoint as dcp

    dcp.save(staged, checkpoint_id=str(Path(tmp) / DCP_DIR), process_group=group)
    mine = sorted((Path(tmp) / DCP_DIR).glob(f"__{rank}_*.distcp"))
    return {f"{DCP_DIR}/{p.name}": {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in mine}


def load(path: Path, *, model, optimizer) -> None:
    """Collective: load model + optimizer of sharded checkpoint `path` in place (resharded to this group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    path = Path(path)
    check_metadata(path)
    try:
        box = state_dicts(model, optimizer)
        dcp.load(box, checkpoint_id=str(path / DCP_DIR))
        set_state_dict(model, optimizer, model_state_dict=box["model"], optim_state_dict=box["optim"])
    except Exception as exc:
        raise CheckpointError(f"sharded checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc


def load_full_model_state(path) -> dict:
    """The full (unsharded) model state_dict of sharded checkpoint `path`, read in one process, no process group.
    Plain CPU tensors, keys as Transformer.state_dict()."""
    import warnings

    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys
    path = Path(path)
    check_metadata(path)
    try:
        with warnings.catch_warnings():  # "torch.distributed is unavailable ...": one process is the point
            warnings.simplefilter("ignore", UserWarning)
            loaded = _load_state_dict_from_keys(keys={"model"}, checkpoint_id=str(path / DCP_DIR))
    except Exception as exc:
        raise CheckpointError(f"sharded checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    model = loaded["model"] if "model" in loaded else {k[len("model."):]: v for k, v in loaded.items()
                                                        if k.startswith("model.")}
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in model.items()}
