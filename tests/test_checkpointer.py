"""study.train.checkpointer: one save/load interface for the file and sharded layouts, saves that overlap
training, and a SIGTERM during a save in flight that still leaves complete, resumable checkpoints.

- Round trip: what `save` wrote, `load` puts back into a fresh model, optimizer and scheduler exactly, and
  `model_state` (study eval's reader) gives the same weights, for the single-file layout (one process) and the
  sharded one (FSDP2, 2 gloo ranks, written asynchronously through DCP on its own process group).
- Asynchronous save, under a real SIGTERM: the write of one checkpoint is slowed down and the process sends
  itself SIGTERM as it starts. Training goes on while it is written (rows of later steps appear meanwhile), the
  checkpoint becomes visible only when complete, the stop waits for it and saves its own, and the run resumed
  from there ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time

import pytest
import torch

from study.config import resolve
from study.results import RunDir
from study.train import checkpoint as ckpt
from study.train import train_run
from study.train.checkpointer import Checkpointer, model_state
from study.train.distributed import Dist
from tests.conftest import tiny_raw
from tests.gloo import on_gloo_ranks


def _trained(seed: int, *, fsdp: bool = False):
    """A tiny model, its AdamW and LR scheduler after one step (so the optimizer has state to save)."""
    from study.model import build_model
    from study.train import parallel
    from study.train.optim import build_optimizer, build_scheduler

    cfg = resolve({"model": {"scale": "tiny", "seq_len": 16, "n_layers": 2}, "train": {"steps": 10}})
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    if fsdp:
        parallel.shard(model, cfg.train, torch.device("cpu"), "fp32")
    opt = build_optimizer(model, cfg.optim, device=torch.device("cpu"))
    sched = build_scheduler(opt, cfg.optim, cfg.train.steps)
    ids = torch.randint(0, cfg.model.vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))
    model(ids).float().logsumexp(-1).mean().backward()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return model, opt, sched


def _digest(state: dict) -> str:
    """sha256 over a state dict's tensors (DTensors as their full value) and other values, in key order."""
    h = hashlib.sha256()

    def walk(x, key):
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k], f"{key}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}.{i}")
        elif isinstance(x, torch.Tensor):
            t = x.full_tensor() if hasattr(x, "full_tensor") else x
            h.update(key.encode() + t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{key}={x!r}".encode())

    walk(state, "")
    return h.hexdigest()


def _full_states(model, opt, sched) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    return {"model": _digest(model_sd), "optim": _digest(optim_sd), "sched": _digest(sched.state_dict())}


def _round_trip(rank: int, root: str, fsdp: bool) -> dict:
    d = Dist.current()
    model, opt, sched = _trained(1, fsdp=fsdp)
    saver = Checkpointer(root, d, sharded=fsdp, keep=2)
    published = saver.save(7, model=model, optimizer=opt, scheduler=sched, trainer_state={"data": {"n": 3}},
                           state={"step": 7, "tokens": 70})
    assert published is None  # asynchronous: nothing was published yet when save returned
    assert saver.wait() == 7
    before = _full_states(model, opt, sched)
    fresh, fresh_opt, fresh_sched = _trained(2, fsdp=fsdp)  # other weights, other optimizer state
    assert _full_states(fresh, fresh_opt, fresh_sched)["model"] != before["model"]
    path = ckpt.latest_valid(root)
    files = saver.load(path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    after = _full_states(fresh, fresh_opt, fresh_sched)
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in get_model_state_dict(model).items()}
    return {"before": before, "after": after, "trainer": files["trainer"], "state": files["state"],
            "path": str(path), "model": _digest(full)}


def _check_round_trip(out: dict, *, sharded: bool) -> None:
    assert out["after"] == out["before"]  # model, AdamW moments and LR scheduler restored exactly
    assert out["trainer"] == {"data": {"n": 3}} and out["state"]["step"] == 7
    assert ckpt.verify(out["path"]) is None
    assert os.path.isdir(os.path.join(out["path"], "dcp")) == sharded
    assert _digest(model_state(out["path"])) == out["model"]  # what study eval reads, in one process


def test_file_layout_round_trip(tmp_path, one_thread):
    _check_round_trip(_round_trip(0, str(tmp_path), False), sharded=False)


@pytest.mark.multiprocess
def test_sharded_layout_round_trip_on_two_ranks(tmp_path):
    _check_round_trip(on_gloo_ranks(_round_trip, str(tmp_path), True, world=2), sharded=True)


def _small(cache_dir):
    return resolve(tiny_raw(cache_dir, **{
        "model.seq_len": 64, "model.d_model": 32, "model.n_heads": 2, "model.ffn_hidden": 64, "model.n_layers": 2,
        "train.steps": 8, "train.log_every": 1, "train.ckpt_every": 2, "train.keep_checkpoints": 3,
        "eval.every": 4, "eval.tokens": 512, "eval.batch_size": 4, "prores.schedule": "linear", "prores.T": 2}))


def test_sigterm_during_a_save_in_flight_leaves_complete_checkpoints_and_resumes_bit_exact(
        cache_dir, tmp_path, monkeypatch, one_thread):
    cfg = _small(cache_dir)
    reference = RunDir(train_run(cfg, tmp_path / "reference", handle_signals=False).run_dir)

    real_write, real_save = ckpt.write_files, Checkpointer.save
    seen = {}

    def save_then_sigterm(self, step, **kw):  # the trainer's save of step 4 returns with its write in flight,
        published = real_save(self, step, **kw)
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # then a real SIGTERM arrives (handled in the main thread)
        return published

    def slow_write(tmp, objects):  # the writer thread: step 4's files are written only after step 5 trained
        if "-step_0000004-" in tmp.name and not seen:
            rd = RunDir.for_config(cfg, tmp_path / "cut")
            deadline = time.time() + 120
            while time.time() < deadline and rd.read_jsonl("metrics.jsonl")[-1]["step"] < 5:
                time.sleep(0.01)
            seen["step_during_write"] = rd.read_jsonl("metrics.jsonl")[-1]["step"]
            seen["latest_during_write"] = (rd.checkpoints / "latest").read_text().strip()
            seen["visible_during_write"] = (rd.checkpoints / "step_0000004").exists()
        return real_write(tmp, objects)

    monkeypatch.setattr(ckpt, "write_files", slow_write)
    monkeypatch.setattr(Checkpointer, "save", save_then_sigterm)
    result = train_run(cfg, tmp_path / "cut")  # handle_signals=True, as `study train` runs it
    rd = RunDir(result.run_dir)
    assert seen == {"step_during_write": 5, "latest_during_write": "step_0000002", "visible_during_write": False}
    # The stop came at step 5 (the first step boundary after the signal) and waited for step 4's write.
    assert result.state == "interrupted" and result.step == 5 and result.signal == signal.SIGTERM
    assert [p.name for p in ckpt.list_checkpoints(rd.checkpoints)] == ["step_0000002", "step_0000004",
                                                                       "step_0000005"]
    assert all(ckpt.verify(p) is None for p in ckpt.list_checkpoints(rd.checkpoints))
    assert rd.read_status()["checkpoint_step"] == 5
    assert not [p for p in rd.checkpoints.iterdir() if p.name.startswith(".tmp-")]

    monkeypatch.setattr(ckpt, "write_files", real_write)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    assert train_run(cfg, tmp_path / "cut", handle_signals=False).state == "completed"
    final = "step_0000008/model.pt"
    a, b = (torch.load(r.checkpoints / final, weights_only=True) for r in (rd, reference))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = ("time", "tokens_per_s", "mfu")
    assert ([{k: v for k, v in r.items() if k not in strip} for r in rd.read_jsonl("metrics.jsonl")]
            == [{k: v for k, v in r.items() if k not in strip} for r in reference.read_jsonl("metrics.jsonl")])
