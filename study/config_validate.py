"""Cross-field checks of a run config and the values derived from others (W from T, warmup steps).

study.config builds the dataclasses and checks each field's type and name (study.coerce); what needs more than
one field, or a range, is checked here, after the whole config is known. Called by study.config.resolve.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from study import prores
from study.errors import ConfigError

if TYPE_CHECKING:
    from study.config import RunConfig

__all__ = ["validate"]


def _positive(value, key, source, *, allow_zero=False):
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}", key=key, source=source)


def _in_range(value, lo, hi, key, source):
    if value is not None and not lo <= value <= hi:
        raise ConfigError(f"must be in [{lo}, {hi}], got {value!r}", key=key, source=source)


def validate(cfg: RunConfig, source: str | None) -> None:
    """Cross-field checks and derived values (W from T or back, warmup steps from a fraction)."""
    m, p, o, t = cfg.model, cfg.prores, cfg.optim, cfg.train
    for key in ("vocab_size", "d_model", "n_layers", "n_heads", "ffn_hidden", "seq_len"):
        _positive(getattr(m, key), f"model.{key}", source)
    if m.seq_len < 2:  # one token has no context: attention is the identity, every prediction a bigram
        raise ConfigError(f"must be >= 2, got {m.seq_len!r}", key="model.seq_len", source=source)
    _positive(m.init_std, "model.init_std", source)
    _positive(m.init_truncation, "model.init_truncation", source)
    if m.d_model % m.n_heads or (m.d_model // m.n_heads) % 2:
        raise ConfigError(f"d_model={m.d_model} must split into {m.n_heads} heads of even size (RoPE)",
                          key="model.n_heads", source=source)

    _positive(p.T, "prores.T", source)
    _positive(p.W, "prores.W", source)
    if prores.is_warmed(p.schedule):
        if p.T is None and p.W is None:
            raise ConfigError(f"schedule '{p.schedule}' needs prores.T (or prores.W)", key="prores.T", source=source)
        derived_W = None if p.T is None else prores.total_warmup(p.schedule, m.n_layers, p.T)
        if p.W is not None and derived_W is not None and not math.isclose(p.W, derived_W, rel_tol=1e-9):
            raise ConfigError(f"W={p.W} contradicts T={p.T} (W = {derived_W} for {m.n_layers} layers)",
                              key="prores.W", source=source)
        if p.T is None:
            p.T = prores.unit_from_total(p.schedule, m.n_layers, p.W)
        p.W = prores.total_warmup(p.schedule, m.n_layers, p.T)
    elif p.T is not None or p.W is not None:
        raise ConfigError(f"schedule '{p.schedule}' takes no T or W", key="prores.T", source=source)

    for key in ("steps", "global_batch", "micro_batch", "log_every", "ckpt_every", "keep_checkpoints"):
        _positive(getattr(t, key), f"train.{key}", source)
    _positive(t.probe_every, "train.probe_every", source, allow_zero=True)
    if t.global_batch % t.micro_batch:
        raise ConfigError(f"global_batch={t.global_batch} is not a multiple of micro_batch={t.micro_batch}",
                          key="train.global_batch", source=source)

    _positive(o.lr, "optim.lr", source)
    # grad_clip <= 0 would not clip but zero or flip every update (no learning, or gradient ascent); a value so
    # large it never binds is how to train without clipping.
    _positive(o.grad_clip, "optim.grad_clip", source)
    _positive(o.eps, "optim.eps", source)
    _positive(o.weight_decay, "optim.weight_decay", source, allow_zero=True)
    _in_range(o.min_lr_ratio, 0, 1, "optim.min_lr_ratio", source)
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"expected two numbers in [0, 1), got {o.betas!r}", key="optim.betas", source=source)
    if o.warmup_fraction is not None:
        _in_range(o.warmup_fraction, 0, 1, "optim.warmup_fraction", source)
        steps = round(o.warmup_fraction * t.steps)
        if o.warmup_steps is not None and o.warmup_steps != steps:  # a resolved config carries both
            raise ConfigError(f"warmup_steps={o.warmup_steps} contradicts warmup_fraction={o.warmup_fraction} "
                              f"of {t.steps} steps; give one of them", key="optim.warmup_steps", source=source)
        o.warmup_steps = steps
    if o.warmup_steps is None:
        o.warmup_steps = 0
    _positive(o.warmup_steps, "optim.warmup_steps", source, allow_zero=True)
    _in_range(o.decay_fraction, 0, 1, "optim.decay_fraction", source)

    d = cfg.data
    if d.source == "files" and not d.paths:
        raise ConfigError("source 'files' needs data.paths", key="data.paths", source=source)
    if d.source == "hf" and not d.hf_path:
        raise ConfigError("source 'hf' needs data.hf_path", key="data.hf_path", source=source)
    if not 0 <= d.heldout_fraction < 1:
        raise ConfigError(f"must be in [0, 1), got {d.heldout_fraction}", key="data.heldout_fraction", source=source)
    _positive(cfg.eval.tokens, "eval.tokens", source)
    _positive(cfg.eval.batch_size, "eval.batch_size", source)
    _positive(cfg.eval.lm_eval_batch_size, "eval.lm_eval_batch_size", source)
    _positive(cfg.eval.lm_eval_limit, "eval.lm_eval_limit", source)
    _positive(t.probe_sequences, "train.probe_sequences", source)
    _positive(t.probe_len, "train.probe_len", source)
    if t.probe_every and t.probe_len > m.seq_len:  # the probe is cut from a held-out sequence of seq_len tokens
        raise ConfigError(f"must be <= model.seq_len ({m.seq_len}) to probe, got {t.probe_len}",
                          key="train.probe_len", source=source)
    _positive(t.console_every, "train.console_every", source, allow_zero=True)
    evaluates = cfg.eval.every > 0 or cfg.eval.at_end or t.probe_every > 0
    if evaluates and d.heldout_fraction == 0 and not (d.source == "hf" and d.eval_split):
        raise ConfigError("0 leaves no held-out documents to evaluate (or probe) on; set it > 0, give an HF "
                          "dataset's data.eval_split, or turn evaluation off (eval.every=0, eval.at_end=false)",
                          key="data.heldout_fraction", source=source)
    _positive(t.diverge_loss, "train.diverge_loss", source)
    if not 0 <= t.seed < 2 ** 32:  # numpy's seed range, and every seed is representable in every RNG
        raise ConfigError(f"must be in [0, 2**32), got {t.seed!r}", key="train.seed", source=source)
    _positive(m.norm_eps, "model.norm_eps", source)
    _positive(m.rope_theta, "model.rope_theta", source)
    _positive(d.shuffle_buffer, "data.shuffle_buffer", source, allow_zero=True)
    _positive(cfg.eval.every, "eval.every", source, allow_zero=True)
