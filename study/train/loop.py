"""The training run: one function, `train_run`, from a resolved config to a finished run directory.

Every optimizer step: gradient accumulation over micro-batches to the global batch, grad-norm clipping (the norm
is logged before clipping), AdamW, LR schedule, then alpha(l, step) of the ProRes schedule is copied into the
model's buffers. Per-step loss and grad norm stay on the device and are written out at log steps (one host sync
per log interval); divergence (NaN/inf, or a loss above the threshold) is a result recorded with its step.
SIGTERM / SIGUSR2 / Ctrl-C (SIGINT) end the run at the next step boundary with a checkpoint and state
'interrupted'; calling train_run again resumes from the newest valid checkpoint, bit-identical to an
uninterrupted run on CPU, after checking that the checkpoint and config.yaml are this run's (see _check_identity).
One process at a time owns a run directory (study.lease); a filesystem error ends the run 'failed' with
one line (StorageError).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from study import console, prores
from study import lease as lease_mod
from study.config import run_id
from study.data.batch import IGNORE
from study.errors import CheckpointError, ConfigError, StorageError
from study.perplexity import eval_row
from study.results import FINAL_STATES, RunDir, RunStatus, check_results_root, provenance
from study.train import checkpoint as ckpt
from study.train import parallel, runtime, trackers
from study.train.checkpointer import Checkpointer
from study.train.distributed import Dist
from study.train.optim import build_optimizer, build_scheduler
from study.train.probes import ProbeWriter
from study.train.signals import StopFlag, signals_to

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    state: str
    step: int
    signal: int | None = None  # the signal that interrupted the run, if any


def _set_alphas(model, cfg, step: int) -> None:
    model.set_alphas(prores.alphas(cfg.prores.schedule, step, cfg.model.n_layers, cfg.prores.T))


def train_run(cfg, root, *, axes: dict | None = None, argv: list[str] | None = None,
              stop: StopFlag | None = None, handle_signals: bool = True) -> RunResult:
    """Train `cfg` into <root>/<grid>/<run-name>/, resuming if the run directory holds a checkpoint."""
    stop = stop if stop is not None else StopFlag()
    root = check_results_root(root)
    trainer = _Trainer(cfg, root, axes, argv, stop)
    with signals_to(stop, handle_signals), trackers.attached(cfg, trainer.rd, main=trainer.dist.main):
        return trainer.run()


class _Trainer:
    def __init__(self, cfg, root: Path, axes, argv, stop: StopFlag):
        self.cfg, self.axes, self.argv, self.stop = cfg, axes, argv, stop
        self.dist = Dist.current()
        self.rd = RunDir.for_config(cfg, root, axes)
        self.step = 0
        self.tokens = 0
        self.saver: Checkpointer | None = None

    # ---------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.device = runtime.select_device(self.cfg.train)
        self.precision = runtime.precision(self.cfg.train, self.device)
        runtime.check_memory(self.cfg, self.device, self.precision, self.dist)  # before allocating or writing anything
        self.lease = self._own()
        try:
            # Read under the lease: a result another process finished a moment ago is seen, never retrained.
            status = self.dist.broadcast(self.rd.read_status() if self.dist.main else None)
            if status.get("state") in FINAL_STATES:  # a result exists: never train it twice
                return RunResult(self.rd.path, status["state"], status.get("step", 0))
            try:
                self._setup()
                return self._loop()
            except Exception as exc:
                error = runtime.storage_error(exc) or exc
                if self.dist.main and not (self.lease and self.lease.lost):
                    # The disk that failed the run may refuse this too; then the released lease tells status.
                    with contextlib.suppress(OSError):
                        self.rd.write_status(RunStatus.FAILED, self.step, error=f"{type(error).__name__}: {error}")
                if error is exc:
                    raise
                raise error from exc
        finally:
            if self.saver is not None:  # a save in flight finishes while this process still owns the run
                self.saver.close()
            if self.lease is not None:
                self.lease.release()

    def _own(self) -> lease_mod.Lease | None:
        """Rank 0 takes the run directory's lease (one live trainer per run); every rank learns the outcome."""
        lease, refusal = None, None
        if self.dist.main:
            try:
                lease = lease_mod.Lease(self.rd.path).acquire()
            except lease_mod.RunBusy as exc:
                refusal = ("busy", str(exc))
            except OSError as exc:
                refusal = ("storage", str(runtime.storage_error(exc) or exc))
        refusal = self.dist.broadcast(refusal)
        if refusal is not None:
            raise (lease_mod.RunBusy if refusal[0] == "busy" else StorageError)(refusal[1])
        return lease

    def _setup(self) -> None:
        from study.data import build_tokenizer, heldout_batches, open_stream
        from study.model import build_model, info, init_fingerprint

        cfg, d = self.cfg, self.dist
        torch.manual_seed(cfg.train.seed)  # every rank builds the same initial weights
        np.random.seed(cfg.train.seed)
        random.seed(cfg.train.seed)
        if cfg.train.parallelism == "fsdp" and d.active:  # meta build: each rank materialises its shard only
            model = parallel.build_sharded(cfg.model, cfg.train, self.device, precision=self.precision)
        else:
            model = build_model(cfg.model)
        self.fingerprint = init_fingerprint(model)
        if self.precision == "bf16-pure":  # the official code's mode; alpha buffers stay fp32
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)
        self.model = model.to(self.device)
        self.info = info(cfg.model)

        # Rank 0 builds (and caches) the tokenizer first so ranks don't train it concurrently.
        if d.main:
            self.tok = build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)
        d.barrier()
        if not d.main:
            self.tok = build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)
        self.stream = open_stream(cfg.data, self.tok, seq_len=cfg.model.seq_len, seed=cfg.train.seed,
                                   rank=d.rank, world_size=d.world)
        needs_eval = cfg.eval.every > 0 or cfg.eval.at_end
        # Every rank evaluates its share of the held-out batches (study.perplexity); a sharded (FSDP) model can
        # only run forward on all ranks together, so there they run in lockstep.
        self.sharded_model = cfg.train.parallelism == "fsdp" and d.active
        self.heldout = (heldout_batches(cfg.data, self.tok, seq_len=cfg.model.seq_len, tokens=cfg.eval.tokens,
                                        batch_size=cfg.eval.batch_size) if needs_eval else None)
        self.probes = ProbeWriter(self.rd, cfg, self._probe_batch()) if d.main and cfg.train.probe_every else None

        if self.sharded_model and cfg.train.probe_every:
            from study.errors import ConfigError
            raise ConfigError("parallelism fsdp: per-layer probes run on rank 0 and cannot use a sharded model; "
                              "set train.probe_every=0 (probe a checkpoint instead)", key="train.probe_every")
        self.wrapped = parallel.wrap(self.model, cfg.train, d, self.device, precision=self.precision)
        # After wrap: under FSDP the optimizer must hold the sharded DTensor parameters.
        self.optimizer = build_optimizer(self.model, cfg.optim, device=self.device)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.steps)
        self.forward = self.wrapped.forward
        self.saver = Checkpointer(self.rd.checkpoints, d, sharded=self.wrapped.kind == "fsdp",
                                  keep=cfg.train.keep_checkpoints)

        self.micro = cfg.train.micro_batch
        per_rank = cfg.train.global_batch // d.world
        if cfg.train.global_batch % (self.micro * d.world):
            from study.errors import ConfigError
            raise ConfigError(f"global_batch={cfg.train.global_batch} must be a multiple of micro_batch × "
                              f"processes = {self.micro} × {d.world}", key="train.global_batch")
        self.accum = per_rank // self.micro
        self.diverge_loss = cfg.train.diverge_loss or 1.5 * math.log(cfg.model.vocab_size)
        self._resume_or_start()

    def _probe_batch(self) -> torch.Tensor:
        """A fixed probe batch: the first held-out sequences (the eval set starts with them), cut to probe_len."""
        from study.data import heldout_batches
        n = self.cfg.train.probe_sequences
        first = heldout_batches(self.cfg.data, self.tok, seq_len=self.cfg.model.seq_len,
                                tokens=n * self.cfg.model.seq_len, batch_size=n)[0]["input_ids"]
        return first[:n, :self.cfg.train.probe_len].clone()

    def _resume_or_start(self) -> None:
        cfg, d, rd = self.cfg, self.dist, self.rd
        path, refusal, changed = None, None, {}
        if d.main:
            layout = ckpt.layout_problem(rd.checkpoints)
            if layout:
                refusal = ("CheckpointError", f"{layout}; move it away, then run the same command again")
            ckpt.reclaim_temporary(rd.checkpoints)  # leftovers of a save that was killed or hit a full disk
            path = ckpt.latest_valid(rd.checkpoints)
            if path is not None and refusal is None:
                try:
                    changed = self._check_identity(path)
                except (ConfigError, CheckpointError) as exc:
                    refusal = (type(exc).__name__, str(exc))
        refusal = d.broadcast(refusal)
        if refusal is not None:
            raise (ConfigError if refusal[0] == "ConfigError" else CheckpointError)(refusal[1])
        path = d.broadcast(str(path) if path else None)
        # Every process of the run, for the record (rank 0 writes it into run.json's provenance).
        ranks = d.gather({"rank": d.rank, "host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device)})
        if path is None:
            if d.main:
                rd.write_config(cfg)
                for name in ("metrics.jsonl", "eval.jsonl", "probes.jsonl"):  # leftovers of a run with no checkpoint
                    rd.truncate_jsonl(name, -1)  # all of them, step 0's probe rows too: they are written again
                rd.write_run({
                    "run_id": run_id(cfg), "run_name": rd.path.name, "grid": cfg.grid, "axes": self.axes or {},
                    "method": cfg.method, "schedule": cfg.prores.schedule, "scale": cfg.model.scale,
                    "n_layers": cfg.model.n_layers, "params": self.info["params"], "T": cfg.prores.T,
                    "W": cfg.prores.W, "flops_per_token": self.info["flops_per_token"],
                    "init_fingerprint": self.fingerprint, "provenance": {**provenance(self.argv), "ranks": ranks},
                    "device": str(self.device), "precision": self.precision, "world_size": d.world,
                })
                rd.write_status(RunStatus.RUNNING, 0, error=None, diverged_step=None)
            _set_alphas(self.model, cfg, 0)
            if self.probes:
                self.probes.write(self.model, 0)
            return
        files = self.saver.load(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        trainer = files["trainer"]
        runtime.set_rng_state(trainer["rng"])
        self.stream.load_state_dict(trainer["data"])  # the same on every rank (ranks stride one global stream)
        self.step, self.tokens = files["state"]["step"], files["state"]["tokens"]
        _set_alphas(self.model, cfg, self.step)
        if d.main:
            for name in ("metrics.jsonl", "eval.jsonl", "probes.jsonl"):
                rd.truncate_jsonl(name, self.step)
            run = rd.read_run()
            run.setdefault("resumes", []).append({"step": self.step,
                                                  "provenance": {**provenance(self.argv), "ranks": ranks},
                                                  **({"changed": changed} if changed else {})})
            rd.write_run(run)
            if changed or not (rd.path / "config.yaml").is_file():  # config.yaml says what produces the rows
                rd.write_config(cfg)  # from here on (run.json when it changed); a deleted one is written again
            rd.write_status(RunStatus.RUNNING, self.step, error=None)
            log.info("resuming %s from checkpoint step %d", rd.path.name, self.step)

    def _check_identity(self, path) -> dict:
        """Refuse to resume checkpoint `path` into this run unless it is this run's, with only bookkeeping
        (logging, checkpoint and eval cadence) changed. Returns {key: [old, new]} of what changed."""
        from study import config as config_mod

        want = run_id(self.cfg)
        have = ckpt.read_state(path).get("run_id")
        if have != want:
            raise CheckpointError(f"checkpoint {path} belongs to run {have}, not to this run ({want}); refusing to "
                                  f"resume from it (move it away, or train into another --out)")
        recorded = self.rd.read_run().get("run_id")
        if recorded not in (None, want):
            raise CheckpointError(f"{self.rd.path} holds run {recorded} (run.json), not this run ({want}); "
                                  f"refusing to resume into it")
        if not (self.rd.path / "config.yaml").exists():
            return {}
        old = self.rd.read_config()
        diffs = config_mod.differences(old, self.cfg)
        refused = {k: v for k, v in diffs.items() if not config_mod.may_change_on_resume(k)}
        if refused:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(refused.items()))
            raise ConfigError(f"resuming {self.rd.path.name} with a different config would mix results: {shown}. "
                              f"Only {', '.join(config_mod.RESUME_MAY_CHANGE)} may change on resume; restore the "
                              f"old values or train into another --out", source=str(self.rd.path / "config.yaml"))
        return diffs

    # ---------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimizer step; returns (mean loss, grad norm before clipping) as device tensors, tokens."""
        batches = [self.stream.next_batch(self.micro) for _ in range(self.accum)]
        labels = [b["labels"] for b in batches]
        n_local = sum(int((lab != IGNORE).sum()) for lab in labels)  # host tensors: no device sync
        if self.dist.active and self.cfg.data.packing != "pack":  # packed batches are full on every rank
            n_local = int(self.dist.all_reduce_sum(torch.tensor([float(n_local)], device=self.device)).item())
            n_global = n_local
        else:
            n_global = n_local * self.dist.world
        # Token-weighted mean over the global batch; DDP averages gradients over ranks, hence × world.
        scale = self.dist.world / max(n_global, 1)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        for i, batch in enumerate(batches):
            x, y = batch["input_ids"], batch["labels"]
            if self.device.type == "cuda":  # pinned host memory lets the copy overlap with compute
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self.wrapped.no_sync(i == len(batches) - 1), self._autocast():
                logits = self.forward(x)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                       ignore_index=IGNORE, reduction="sum")
            (loss * scale).backward()
            loss_sum += loss.detach()
        grad_norm = parallel.grad_norm_value(  # a replicated DTensor under FSDP: its plain value
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip))
        self.lr = self.scheduler.get_last_lr()[0]  # the LR this step uses (stepping the scheduler moves it on)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean_loss = self.dist.all_reduce_sum(loss_sum) / max(n_global, 1)
        return mean_loss, grad_norm.detach(), int(n_global)

    def _loop(self) -> RunResult:
        cfg, d, rd = self.cfg, self.dist, self.rd
        total = cfg.train.steps
        bar = None
        if d.main:
            bar = console.TrainProgress(rd.path.name, total, self.step, enabled=cfg.train.progress,
                                        every=cfg.train.console_every or cfg.train.log_every)
        pending: list[tuple[int, torch.Tensor, torch.Tensor, float, int]] = []
        window_start, window_tokens = time.perf_counter(), 0
        peak = runtime.peak_flops(self.device)
        self.model.train()
        try:
            while self.step < total:
                loss, gnorm, n_tok = self._train_step()
                lr = self.lr
                self.step += 1
                self.tokens += n_tok
                window_tokens += n_tok
                _set_alphas(self.model, cfg, self.step)
                pending.append((self.step, loss, gnorm, lr, self.tokens))

                # The final eval and probe come BEFORE the final checkpoint: a run killed after them resumes
                # from a checkpoint that already has them and only writes 'completed' (no row twice).
                final = self.step == total
                at_eval = (cfg.eval.every and self.step % cfg.eval.every == 0) or (final and cfg.eval.at_end)
                at_probe = cfg.train.probe_every and (self.step % cfg.train.probe_every == 0 or final)
                at_ckpt = self.step % cfg.train.ckpt_every == 0 or final
                at_log = self.step % cfg.train.log_every == 0
                lost = d.main and self.lease is not None and self.lease.lost
                if not d.active:
                    stopping = bool(self.stop)
                elif at_log or at_eval or at_probe or at_ckpt:
                    # One collective carries both: a stop request on any rank (heeded at log steps only, so
                    # every rank stops at the same step) and rank 0's news that the run's lease was lost.
                    stopping, lost = d.any(at_log and bool(self.stop), lost, device=self.device)
                else:
                    stopping = lost = False
                if at_log or at_eval or at_probe or at_ckpt or stopping:
                    if lost:
                        raise lease_mod.RunBusy(f"{rd.path}: another process took over this run; stopped "
                                                f"without writing to it")
                    elapsed = time.perf_counter() - window_start
                    tps = window_tokens / elapsed if elapsed > 0 else None
                    # A stop between log steps flushes too, but its row gets no alphas: the rows of an
                    # interrupted and resumed run must equal an uninterrupted run's (timing aside).
                    diverged = self._flush(pending, tps, peak, bar,
                                           with_alpha=bool(at_log or at_eval or at_probe or at_ckpt))
                    pending, window_start, window_tokens = [], time.perf_counter(), 0
                    if diverged is not None:
                        return self._end_diverged(diverged)
                if at_eval:
                    self._evaluate()
                if at_probe and self.probes:
                    self.probes.write(self.model, self.step)
                if at_ckpt or stopping:
                    self._save(final=final or stopping)
                if stopping and self.step < total:
                    if d.main:
                        rd.write_status(RunStatus.INTERRUPTED, self.step, signal=self.stop.signum)
                    return RunResult(rd.path, RunStatus.INTERRUPTED, self.step, self.stop.signum)
        finally:
            if bar is not None:
                bar.close()
        if d.main:
            rd.write_status(RunStatus.COMPLETED, self.step)
        d.barrier()
        return RunResult(rd.path, RunStatus.COMPLETED, self.step)

    def _flush(self, pending, tps, peak, bar, *, with_alpha: bool = True) -> int | None:
        """Write the buffered per-step rows (one host sync); return the first diverged step, if any."""
        if not pending:
            return None
        losses = torch.stack([p[1] for p in pending]).float().cpu().tolist()
        gnorms = torch.stack([p[2] for p in pending]).float().cpu().tolist()
        first_bad = next((p[0] for p, l in zip(pending, losses, strict=True)
                          if not math.isfinite(l) or l > self.diverge_loss), None)
        if self.dist.main:
            mfu = (tps * self.info["flops_per_token"] / peak) if (peak and tps) else None
            alpha = self.model.alphas().tolist()
            for (step, _, _, lr, tokens), l, g in zip(pending, losses, gnorms, strict=True):
                self.rd.append_jsonl("metrics.jsonl", {
                    "step": step, "loss": l, "lr": lr, "grad_norm": g, "tokens": tokens,
                    "tokens_per_s": tps, "mfu": mfu,
                    "alpha": alpha if with_alpha and step == pending[-1][0] else None, "time": time.time()})
                if first_bad is not None and step >= first_bad:
                    break
            if bar is not None:
                bar.update(pending[-1][0], loss=losses[-1], lr=pending[-1][3], tokens_per_s=tps, mfu=mfu)
        return first_bad

    def _end_diverged(self, step: int) -> RunResult:
        if self.dist.main:
            self.rd.write_status(RunStatus.DIVERGED, step, diverged_step=step,
                                 error=f"loss not finite or above {self.diverge_loss:.3g} at step {step}")
            log.warning("%s diverged at step %d", self.rd.path.name, step)
        self.dist.barrier()
        return RunResult(self.rd.path, RunStatus.DIVERGED, step)

    def _evaluate(self) -> None:
        """Held-out perplexity through the same function as `study eval`, so the two rows agree exactly; each
        rank scores its share of the batches and the sums are all-reduced (study.perplexity)."""
        if self.heldout:
            dtype = torch.bfloat16 if self.precision == "bf16" else None
            row = eval_row(self.model, self.heldout, step=self.step, data_cfg=self.cfg.data,
                           seq_len=self.cfg.model.seq_len, source="train", device=self.device, dtype=dtype,
                           rank=self.dist.rank, world=self.dist.world, lockstep=self.sharded_model)
            self.model.train()
            if self.dist.main:
                self.rd.append_jsonl("eval.jsonl", row)

    def _save(self, *, final: bool = False) -> None:
        """Checkpoint this step: a snapshot, then written in the background (study.train.checkpointer); the final
        or stop save returns once published. status.json's checkpoint_step follows each published save."""
        published = self.saver.save(
            self.step, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            trainer_state={"rng": runtime.rng_state(), "data": self.stream.state_dict()},  # same on every rank
            state={"step": self.step, "tokens": self.tokens, "alpha": self.model.alphas().tolist(),
                   "run_id": run_id(self.cfg), "world_size": self.dist.world}, wait=final)
        if published is not None and self.dist.main:
            self.rd.write_status(RunStatus.RUNNING, self.step, checkpoint_step=published)
