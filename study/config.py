"""Typed run configuration: dataclasses loaded from YAML, overridable with `--set a.b=c`, fully resolved.

Resolution order (later wins): dataclass defaults < method preset < scale preset < recipe < the file < --set.
A method or scale never silently overrides an explicit value: method vs. an explicit, different norm/init is an
error; scale and recipe only fill what the file left unset. The resolved config (every default filled in) is what
is written to a run directory and hashed into the run id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from study import presets, prores
from study.errors import ConfigError, unknown_name

NORMS = ("pre", "post", "sandwich", "deepnorm", "lns", "lns-gain")
NORM_ALIASES = {"deeppost": "deepnorm", "sandwich_post": "sandwich"}  # official NORM_TYPE spellings
INITS = ("normal", "trunc-normal", "scaled", "ds-init", "deepnorm")
EMBED_STD_RULES = ("fixed", "sqrt-d")
LR_SCHEDULES = ("wsd", "cosine", "constant")
DATA_SOURCES = ("default", "files", "hf")
PACKING = ("pack", "pad")
PRECISIONS = ("auto", "fp32", "bf16", "bf16-pure")
DEVICES = ("auto", "cpu", "cuda")
PARALLELISMS = ("ddp", "fsdp")


def choice(default, choices, **kw):
    """A field whose value must be one of `choices` (a tuple, or a dict whose keys are the names)."""
    return field(default=default, metadata={"choices": tuple(choices)}, **kw)


@dataclass
class ModelConfig:
    scale: str | None = choice(None, presets.SCALES)  # fills the architecture fields left unset
    vocab_size: int = 32000
    d_model: int = 512
    n_layers: int = 12
    n_heads: int = 8
    ffn_hidden: int = 1368
    seq_len: int = 1024
    norm: str = choice("pre", NORMS)
    init: str = choice("normal", INITS)
    init_std: float = 0.02
    # Embedding std: 'fixed' = init_std (paper), 'sqrt-d' = init_std·sqrt(d_model) (official code).
    embed_std_rule: str = choice("fixed", EMBED_STD_RULES)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0


@dataclass
class ProResConfig:
    schedule: str = choice("none", prores.SCHEDULES)
    # Give one of T (warmup unit of the first layer, the paper's parameter) or W (steps until every layer
    # reaches 1, the official flag); the other is derived. Both are None for 'none' and fix-* schedules.
    T: float | None = None
    W: float | None = None


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    lr_schedule: str = choice("wsd", LR_SCHEDULES)
    # Give warmup_steps, or warmup_fraction of train.steps; resolution turns a fraction into steps.
    warmup_steps: int | None = None
    warmup_fraction: float | None = None
    decay_fraction: float = 0.1  # WSD: linear decay to 0 over this last fraction of training
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    fused: bool | None = None  # fused AdamW; None = on CUDA only


@dataclass
class DataConfig:
    source: str = choice("default", DATA_SOURCES)
    paths: list[str] = field(default_factory=list)  # source 'files': globs of .txt / .jsonl / .json files
    hf_path: str | None = None  # source 'hf': dataset name ('allenai/c4') or a builder ('json')
    hf_name: str | None = None  # e.g. 'en'
    hf_data_files: dict | None = None  # split -> list of files, for builders such as 'json'
    train_split: str = "train"
    eval_split: str | None = None  # None: a held-out slice of the training documents (by document hash)
    text_field: str = "text"
    streaming: bool = True
    heldout_fraction: float = 0.02
    shuffle_buffer: int = 10000
    tokenizer: str = "default"  # 'default' = byte-level BPE trained on the bundled corpus; else HF name/path
    packing: str = choice("pack", PACKING)
    cache_dir: str = "~/.cache/prores-study"


@dataclass
class TrainConfig:
    steps: int = 100000
    global_batch: int = 512  # sequences per optimizer step, over all processes
    micro_batch: int = 8  # sequences per forward pass per process
    precision: str = choice("auto", PRECISIONS)  # auto: fp32 on CPU, bf16 autocast on CUDA
    compile: bool = False
    device: str = choice("auto", DEVICES)
    parallelism: str = choice("ddp", PARALLELISMS)
    activation_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    probe_every: int = 0  # 0 = no per-layer probes
    probe_sequences: int = 2
    probe_len: int = 128
    diverge_loss: float | None = None  # None: 1.5·ln(vocab_size)
    progress: bool = True


@dataclass
class EvalConfig:
    every: int = 1000  # held-out perplexity every N steps (0: only at the end)
    tokens: int = 10_000_000
    batch_size: int = 8
    at_end: bool = True
    lm_eval_tasks: list[str] = field(default_factory=list)
    lm_eval_limit: int | None = None
    lm_eval_batch_size: int = 8
    lm_eval_data_dir: str | None = None


@dataclass
class RunConfig:
    method: str | None = choice(None, presets.METHODS)
    recipe: str | None = choice(None, presets.RECIPES)
    grid: str = "runs"  # results subfolder: <root>/<grid>/<run-name>/
    name: str | None = None  # readable run-name prefix; default from method/norm, schedule, scale
    model: ModelConfig = field(default_factory=ModelConfig)
    prores: ProResConfig = field(default_factory=ProResConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Keys that change bookkeeping, not results: left out of the run id.
NON_SEMANTIC = (
    "grid", "name", "data.cache_dir",
    "train.log_every", "train.ckpt_every", "train.keep_checkpoints", "train.progress",
    "train.probe_every", "train.probe_sequences", "train.probe_len",
    "eval",
)


# ---------------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts with checked keys, types and names
# ---------------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str, source: str | None):
    """Check `value` against annotation `tp` (after `from __future__ import annotations`, resolved)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}", key=key, source=source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {value!r}", key=key, source=source)
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", key=key, source=source)
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"expected a finite number, got {value!r}", key=key, source=source)
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' as a string
            try:
                return _coerce(float(value), float, key, source)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", key=key, source=source)


def from_dict(cls, data: dict | None, *, source: str | None = None, prefix: str = ""):
    """Build dataclass `cls` from `data`, rejecting unknown keys, wrong types and unknown names."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {data!r}", key=prefix.rstrip(".") or None, source=source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key; valid keys: {', '.join(fields)}", key=f"{prefix}{unknown[0]}", source=source
        )
    kwargs = {}
    for name, value in data.items():
        f, tp, key = fields[name], hints[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, source=source, prefix=f"{key}.")
            continue
        value = _coerce(value, tp, key, source)
        choices = f.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise unknown_name(name.replace("_", " "), value, choices, key=key, source=source)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------------
# Overrides and resolution
# ---------------------------------------------------------------------------------------------------
def parse_override(text: str, *, source: str = "--set") -> tuple[str, Any]:
    """'optim.lr=1e-3' -> ('optim.lr', 0.001); the value is read as YAML so types come out natural."""
    if "=" not in text:
        raise ConfigError(f"expected KEY=VALUE, got {text!r}", source=source)
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_path(data: dict, dotted: str, value, *, source: str | None = None) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{part}' is not a section", key=dotted, source=source)
        node = child
    node[parts[-1]] = value


def get_path(data: dict, dotted: str, default=None):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError("file not found", source=str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", source=str(path))
    return data


def resolve(raw: dict, *, source: str | None = None) -> RunConfig:
    """Raw nested dict (file + overrides) -> fully resolved RunConfig. Raises ConfigError on any problem."""
    raw = json.loads(json.dumps(raw, default=str))  # deep copy of plain data
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level", source=source)
    for section in ("model", "prores", "optim", "data", "train", "eval"):
        if raw.get(section) is None:
            raw[section] = {}
        elif not isinstance(raw[section], dict):
            raise ConfigError(f"expected a mapping, got {raw[section]!r}", key=section, source=source)
    model = raw["model"]
    schedule = raw["prores"].get("schedule")
    if isinstance(schedule, str) and schedule in prores.ALIASES:  # official spellings
        raw["prores"]["schedule"] = prores.canonical(schedule)
    if model.get("norm") in NORM_ALIASES:
        model["norm"] = NORM_ALIASES[model["norm"]]

    method = raw.get("method")
    if method is not None:
        if method not in presets.METHODS:
            raise unknown_name("method", method, presets.METHODS, key="method", source=source)
        for k, v in presets.METHODS[method].items():
            if model.get(k, v) != v:
                raise ConfigError(f"method '{method}' sets {k}={v!r} but the config says {model[k]!r}",
                                  key=f"model.{k}", source=source)
            model[k] = v

    scale = model.get("scale")
    if scale is not None:
        if scale not in presets.SCALES:
            raise unknown_name("scale", scale, presets.SCALES, key="model.scale", source=source)
        for k, v in presets.SCALES[scale].items():
            model.setdefault(k, v)

    recipe = raw.get("recipe")
    if recipe is not None:
        if recipe not in presets.RECIPES:
            raise unknown_name("recipe", recipe, presets.RECIPES, key="recipe", source=source)
        optim = raw["optim"]
        explicit_warmup = "warmup_steps" in optim or "warmup_fraction" in optim
        for k, v in presets.RECIPES[recipe](method, scale).items():
            if k.startswith("warmup") and explicit_warmup:
                continue
            optim.setdefault(k, v)

    cfg = from_dict(RunConfig, raw, source=source)
    _validate(cfg, source)
    return cfg


def _positive(value, key, source, *, allow_zero=False):
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}", key=key, source=source)


def _validate(cfg: RunConfig, source: str | None) -> None:
    """Cross-field checks and derived values (W from T or back, warmup steps from a fraction)."""
    m, p, o, t = cfg.model, cfg.prores, cfg.optim, cfg.train
    for key in ("vocab_size", "d_model", "n_layers", "n_heads", "ffn_hidden", "seq_len"):
        _positive(getattr(m, key), f"model.{key}", source)
    _positive(m.init_std, "model.init_std", source)
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
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"expected two numbers in [0, 1), got {o.betas!r}", key="optim.betas", source=source)
    if o.warmup_fraction is not None:
        if not 0 <= o.warmup_fraction <= 1:
            raise ConfigError(f"must be in [0, 1], got {o.warmup_fraction}", key="optim.warmup_fraction", source=source)
        steps = round(o.warmup_fraction * t.steps)
        if o.warmup_steps is not None and o.warmup_steps != steps:  # a resolved config carries both
            raise ConfigError(f"warmup_steps={o.warmup_steps} contradicts warmup_fraction={o.warmup_fraction} "
                              f"of {t.steps} steps; give one of them", key="optim.warmup_steps", source=source)
        o.warmup_steps = steps
    if o.warmup_steps is None:
        o.warmup_steps = 0
    _positive(o.warmup_steps, "optim.warmup_steps", source, allow_zero=True)
    if not 0 <= o.decay_fraction <= 1:
        raise ConfigError(f"must be in [0, 1], got {o.decay_fraction}", key="optim.decay_fraction", source=source)

    d = cfg.data
    if d.source == "files" and not d.paths:
        raise ConfigError("source 'files' needs data.paths", key="data.paths", source=source)
    if d.source == "hf" and not d.hf_path:
        raise ConfigError("source 'hf' needs data.hf_path", key="data.hf_path", source=source)
    if not 0 <= d.heldout_fraction < 1:
        raise ConfigError(f"must be in [0, 1), got {d.heldout_fraction}", key="data.heldout_fraction", source=source)
    _positive(cfg.eval.tokens, "eval.tokens", source)
    _positive(cfg.eval.every, "eval.every", source, allow_zero=True)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
         base: dict | None = None) -> RunConfig:
    """Load a run config: YAML file (or `base` dict) + 'a.b=c' overrides, resolved and validated."""
    raw = deep_merge(base or {}, read_yaml(path) if path else {})
    source = str(path) if path else None
    for text in overrides:
        key, value = parse_override(text)
        set_path(raw, key, value, source="--set")
    return resolve(raw, source=source)


def semantic_dict(cfg: RunConfig) -> dict:
    """The resolved config less bookkeeping keys: everything that changes a run's result."""
    data = to_dict(cfg)
    for dotted in NON_SEMANTIC:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(last, None)
    return data


def run_id(cfg: RunConfig) -> str:
    """A stable hash of everything that changes the result (not output paths, cadence or cluster options)."""
    blob = json.dumps(semantic_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
