"""One save/load interface for a run's checkpoints, whatever their layout, with saves that overlap training.

    saver = Checkpointer(run_dir.checkpoints, dist, sharded=wrapped.kind == "fsdp", keep=cfg.train.keep_checkpoints)
    saver.save(step, model=, optimizer=, scheduler=, trainer_state={'rng', 'data'}, state={...})  # returns soon
    saver.save(..., wait=True)      # the stop / final save: returns once the checkpoint is published
    saver.wait()                    # the in-flight save done: the step it published (its error raised here)
    saver.load(path, model=, optimizer=, scheduler=) -> {'trainer', 'state'}   # either layout
    model_state(path)               # the full model state of either layout, in one process (study eval)

Layouts (the folder scheme, manifest and `latest` are study.train.checkpoint's): 'file' (one process or DDP:
rank 0 writes model.pt and optim.pt) and 'sharded' (FSDP: every rank writes its shards through
torch.distributed.checkpoint, study.train.sharded). The trainer state (RNG, data position, LR scheduler), and
state.json are the same in both, like lingua's single TrainState next to its DCP folder.

Asynchronous saving. `save` copies what it writes to host memory (the snapshot: the only time training waits;
the host buffers are kept for the next save) and hands the write to a background thread: files, fsync,
MANIFEST.json, rename into place, `latest`, pruning. At most one save is in flight: a save waits for the
previous one first. A checkpoint becomes visible only when complete and fsynced (study.train.checkpoint), so a
kill at any moment leaves the previous one as the newest valid checkpoint. Sharded writes use their own gloo
process group: DCP's collectives run in the writer thread while training's run on the default group, and one
group used from two threads could pair one rank's collective with another's. Each rank hashes the files it
wrote, and rank 0 gathers the entries, so no rank reads the whole checkpoint back.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from pathlib import Path

import torch

from study.errors import CheckpointError
from study.train import checkpoint as ckpt
from study.train import sharded

log = logging.getLogger(__name__)

__all__ = ["Checkpointer", "model_state"]


def _to_host(state: dict, cache: dict | None) -> dict:
    """A copy of `state` (tensors and DTensors, nested in dicts/lists) in host memory, into `cache` when its
    structure matches (no allocation: the snapshot is then one memcpy per tensor), else into new buffers, pinned
    when a GPU is there (faster device-to-host copies). torch.distributed's own staging helpers (those behind
    DCP's BlockingAsyncStager) keep DTensors as DTensors with host-side local shards, which dcp.save writes."""
    from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict

    if cache is not None:
        try:
            return _copy_state_dict(state, cache)
        except Exception:  # another structure (first save after a resume that changed it): allocate again
            pass
    fresh = _create_cpu_state_dict(state, pin_memory=torch.cuda.is_available())
    return _copy_state_dict(state, fresh)


def _yield_to_training() -> None:
    """Lower the calling (writer) thread's CPU priority: on a busy machine the background write takes longer
    instead of slowing training (Linux schedules threads one by one; elsewhere nothing changes). Measured on the
    2-core CPU machine (benchmarks/checkpoint_save.py): without it, training steps during a write lost about
    as much time as the write took."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + 10)


class Checkpointer:
    def __init__(self, ckpt_root, dist, *, sharded: bool, keep: int):
        self.root, self.dist, self.sharded, self.keep = Path(ckpt_root), dist, sharded, keep
        self._cache: dict | None = None
        self._thread: threading.Thread | None = None
        self._outcome: tuple[int | None, BaseException | None] = (None, None)
        # DCP in the writer thread needs a group of its own (see the module docstring); a collective call.
        self._group = None
        if sharded and dist.active:
            import torch.distributed as torch_dist

            self._group = torch_dist.new_group(backend="gloo")
        self.last_stall_s = 0.0  # how long the last save() kept the caller (snapshot + waiting for the previous)

    # ---- saving ------------------------------------------------------------------------------------------
    def save(self, step: int, *, model, optimizer, scheduler, trainer_state: dict, state: dict,
             wait: bool = False) -> int | None:
        """Snapshot checkpoint `step` and write it in the background (every rank calls it). With `wait`, return
        once it is published. Returns the step of the newest checkpoint published since the last call (or
        None): the caller records it."""
        t0 = time.perf_counter()
        published = self.wait()
        tmp = ckpt.begin(self.root, step) if self.dist.main else None
        if self.sharded:  # every rank writes into the folder rank 0 chose
            tmp = Path(self.dist.broadcast(str(tmp) if tmp else None))
        if tmp is not None:
            live = sharded.state_dicts(model, optimizer) if self.sharded else {
                "model": model.state_dict(), "optim": {"optimizer": optimizer.state_dict()}}
            snapshot = self._cache = _to_host(live, self._cache)
            trainer = copy.deepcopy({**trainer_state, "scheduler": scheduler.state_dict()})
            state = {**state, **({"sharded": True} if self.sharded else {})}
            job = (step, tmp, snapshot, trainer, state)
            if wait:  # nothing trains meanwhile: write in this thread, at its priority
                self._write(*job)
            else:
                self._thread = threading.Thread(target=self._write, args=job, kwargs={"background": True},
                                                name=f"checkpoint-{step}", daemon=True)
                self._thread.start()
        self.last_stall_s = time.perf_counter() - t0
        if wait:
            done = self._collect()
            published = done if done is not None else published
        return published

    def _write(self, step: int, tmp: Path, snapshot: dict, trainer: dict, state: dict, *,
               background: bool = False) -> None:
        if background:
            _yield_to_training()
        try:
            if self.sharded:
                known = self._write_shards(tmp, snapshot)
            else:
                known = ckpt.write_files(tmp, {"model.pt": snapshot["model"], "optim.pt": snapshot["optim"]})
            if self.dist.main:
                ckpt.finish(tmp, trainer, state, known)
                ckpt.publish(self.root, tmp, step, self.keep)
            self._outcome = (step, None)
        except BaseException as exc:  # handed to the main thread by wait()
            self._outcome = (None, exc)

    def _write_shards(self, tmp: Path, snapshot: dict) -> dict:
        """Every rank: its shards and their hashes; rank 0 gets all ranks' entries (one gather, even after an
        error on some rank, so that no rank waits for another forever)."""
        entries, error = {}, None
        try:
            entries = sharded.write(tmp, snapshot, rank=self.dist.rank, group=self._group)
        except Exception as exc:
            error = f"rank {self.dist.rank}: {type(exc).__name__}: {exc}"
        gathered = self.dist.gather((entries, error), group=self._group)
        if not self.dist.main:
            if error:
                raise CheckpointError(f"sharded checkpoint write failed on {error}")
            return {}
        failures = [e for _, e in gathered if e]
        if failures:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"sharded checkpoint write failed on {'; '.join(failures)}")
        return {name: entry for rank_entries, _ in gathered for name, entry in rank_entries.items()}

    @property
    def busy(self) -> bool:
        """A save is being written right now."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> int | None:
        """Wait for the save in flight; the step it published (None if none finished since the last call).
        A failed write raises its error here, in the training thread."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread = None
        return self._collect()

    def _collect(self) -> int | None:
        (step, error), self._outcome = self._outcome, (None, None)
        if error is not None:
            raise error
        return step

    def close(self) -> None:
        """Wait for the save in flight on the way out of a run that is ending anyway; its error is logged, not
        raised (the run's own outcome is what the caller reports)."""
        try:
            self.wait()
        except BaseException as exc:
            log.warning("the checkpoint being written when the run ended failed: %s: %s", type(exc).__name__, exc)

    # ---- loading -------------------------------------------------------------------------------------------
    def load(self, path, *, model, optimizer, scheduler) -> dict:
        """Load checkpoint `path` (either layout) into the model, optimizer and scheduler; collective under
        FSDP. Returns {'trainer': RNG and data state, 'state': state.json}."""
        path = Path(path)
        if sharded.is_sharded(path):
            sharded.load(path, model=model, optimizer=optimizer)
            optim = {}
        else:
            ckpt.load_into(model, ckpt.read_file(path, "model.pt"), path)
            optim = ckpt.read_file(path, "optim.pt")
            if not isinstance(optim, dict) or "optimizer" not in optim:
                raise CheckpointError(f"checkpoint {path} cannot be read: optim.pt holds no optimizer state")
            ckpt.load_into(optimizer, optim["optimizer"], path, "optimizer")
        trainer = ckpt.read_trainer_state(path)
        # A file checkpoint written before the trainer state held the scheduler kept it in optim.pt.
        ckpt.load_into(scheduler, trainer.pop("scheduler", None) or optim.get("scheduler"), path, "LR scheduler")
        return {"trainer": trainer, "state": ckpt.read_state(path)}


def model_state(path) -> dict:
    """The full (unsharded) model state_dict of checkpoint `path`, either layout, read in one process."""
    path = Path(path)
    return sharded.load_full_model_state(path) if sharded.is_sharded(path) else ckpt.read_file(path, "model.pt")
