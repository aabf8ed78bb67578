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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from study import lr_schedules, presets, prores
from study.coerce import coerce
from study.config_validate import validate as _validate
from study.errors import ConfigError, unknown_name
from study.rawconfig import deep_merge, key_under, parse_override, read_yaml, set_path

# The config's choices, each once, as a Literal type: the field's annotation, checked by study.coerce (an unknown
# name gets "unknown <field> ...; valid choices: ..."). Where a tuple of the names is needed (loops, argparse
# choices, messages) it is read off the Literal. Choices that are tables of their own (scales, methods, recipes,
# ProRes and LR schedules) take their Literal from the table's names, so a new table entry is a new valid name.
Norm = Literal["pre", "post", "sandwich", "deepnorm", "lns", "lns-gain"]
Init = Literal["normal", "trunc-normal", "scaled", "ds-init", "deepnorm"]
EmbedStdRule = Literal["fixed", "sqrt-d"]
LRSchedule = lr_schedules.Name
DecayGroups = Literal["matrices", "official"]
DataSource = Literal["default", "files", "hf"]
Packing = Literal["pack", "pad"]
Precision = Literal["auto", "fp32", "bf16", "bf16-pure"]
Device = Literal["auto", "cpu", "cuda"]
Parallelism = Literal["ddp", "fsdp"]
Scale = Literal[tuple(presets.SCALES)]
Method = Literal[tuple(presets.METHODS)]
Recipe = Literal[tuple(presets.RECIPES)]
Schedule = prores.Schedule
Tracker = Literal["tensorboard", "wandb"]

NORMS: tuple[str, ...] = typing.get_args(Norm)
NORM_ALIASES = {"deeppost": "deepnorm", "sandwich_post": "sandwich"}  # official NORM_TYPE spellings
INITS: tuple[str, ...] = typing.get_args(Init)
PACKING: tuple[str, ...] = typing.get_args(Packing)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
PARALLELISMS: tuple[str, ...] = typing.get_args(Parallelism)
TRACKERS: tuple[str, ...] = typing.get_args(Tracker)


@dataclass
class ModelConfig:
    scale: Scale | None = None  # fills the architecture fields left unset
    vocab_size: int = 32000
    d_model: int = 512
    n_layers: int = 12
    n_heads: int = 8
    ffn_hidden: int = 1368
    seq_len: int = 1024
    norm: Norm = "pre"
    init: Init = "normal"
    init_std: float = 0.02
    # Truncate every normal draw (embedding, linears, head, and the scaled / ds-init / DeepNorm draws) at
    # ±init_truncation·std; None = untruncated. The paper draws from a truncated N(0, 0.02²) (following OLMo 2,
    # whose OLMo-core init truncates at ±3·std); `recipe: paper` sets 3.0. See study/model/init.py.
    init_truncation: float | None = None
    # Embedding std: 'fixed' = init_std (paper), 'sqrt-d' = init_std·sqrt(d_model) (official code).
    embed_std_rule: EmbedStdRule = "fixed"
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0


@dataclass
class ProResConfig:
    schedule: Schedule = "none"
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
    lr_schedule: LRSchedule = lr_schedules.DEFAULT  # study/lr_schedules.py
    # Give warmup_steps, or warmup_fraction of train.steps; resolution turns a fraction into steps.
    warmup_steps: int | None = None
    warmup_fraction: float | None = None
    decay_fraction: float = 0.1  # WSD: linear decay to 0 over this last fraction of training
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    fused: bool | None = None  # fused AdamW; None = on CUDA only
    # Which parameters are decayed (study/train/optim.py): 'matrices' = every >= 2-D parameter (linears, embedding,
    # head; never norm gains); 'official' = the official ProRes code (no decay on the embedding and the per-layer
    # norm gains; the final norm and the head decayed). `recipe: paper` sets 'official'.
    decay_groups: DecayGroups = "matrices"


@dataclass
class DataConfig:
    source: DataSource = "default"
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
    packing: Packing = "pack"
    cache_dir: str = "~/.cache/prores-study"
    # Read training and held-out tokens from a token store prepared once by `study data prepare` (study.data.store)
    # instead of tokenizing on the fly. store_dir: the store folder; None = <cache_dir>/stores/<data fingerprint>.
    store: bool = False
    store_dir: str | None = None


@dataclass
class TrainConfig:
    steps: int = 100000
    global_batch: int = 512  # sequences per optimizer step, over all processes
    micro_batch: int = 8  # sequences per forward pass per process
    precision: Precision = "auto"  # auto: fp32 on CPU, bf16 autocast on CUDA
    compile: bool = False
    device: Device = "auto"
    parallelism: Parallelism = "ddp"
    activation_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    probe_every: int = 0  # 0 = no per-layer probes
    probe_sequences: int = 2
    probe_len: int = 128
    diverge_loss: float | None = None  # None: 1.5·ln(vocab_size)
    progress: bool = True  # a bar on a terminal; elsewhere (a log file) plain lines, see console_every
    console_every: int = 0  # steps between plain progress lines when not on a terminal (0: every log step)
    # Live dashboards fed the rows of metrics.jsonl / eval.jsonl / probes.jsonl (study/train/trackers.py, extra
    # [track]); metrics.jsonl stays the record. [] = none.
    trackers: list[Tracker] = field(default_factory=list)


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
    method: Method | None = None
    recipe: Recipe | None = None
    grid: str = "runs"  # results subfolder: <root>/<grid>/<run-name>/
    name: str | None = None  # readable run-name prefix; default from method/norm, schedule, scale
    model: ModelConfig = field(default_factory=ModelConfig)
    prores: ProResConfig = field(default_factory=ProResConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SECTIONS = ("model", "prores", "optim", "data", "train", "eval")  # RunConfig's nested sections

# Keys that change bookkeeping, not results: left out of the run id.
NON_SEMANTIC = (
    "grid", "name", "data.cache_dir", "data.store_dir",
    "train.log_every", "train.ckpt_every", "train.keep_checkpoints", "train.progress", "train.console_every",
    "train.trackers", "train.probe_every", "train.probe_sequences", "train.probe_len",
    "eval",
)


# What may differ when a run resumes (the rest of the resolved config must equal its config.yaml): cadence,
# logging and where things go. eval.tokens / eval.batch_size and the probe batch are NOT here although they are
# left out of the run id: changing them mid-run would mix rows measured differently in one file.
RESUME_MAY_CHANGE = (
    "grid", "name", "data.cache_dir", "data.store_dir",
    "train.log_every", "train.ckpt_every", "train.keep_checkpoints", "train.progress", "train.console_every",
    "train.trackers", "train.probe_every",
    "eval.every", "eval.at_end", "eval.lm_eval_tasks", "eval.lm_eval_limit", "eval.lm_eval_batch_size",
    "eval.lm_eval_data_dir",
)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v) and k in SECTIONS:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(old: RunConfig, new: RunConfig) -> dict:
    """{dotted key: [old value, new value]} for every key whose resolved value differs."""
    a, b = _flat(to_dict(old)), _flat(to_dict(new))
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def may_change_on_resume(key: str) -> bool:
    return key_under(key, RESUME_MAY_CHANGE)


# ---------------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts with checked keys, types and names
# ---------------------------------------------------------------------------------------------------
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
        tp, key = hints[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, source=source, prefix=f"{key}.")
            continue
        kwargs[name] = coerce(value, tp, key, source)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------------
# Overrides and resolution
# ---------------------------------------------------------------------------------------------------
WARMUP_KEYS = ("warmup_steps", "warmup_fraction")  # one choice: the config's, else the recipe's


def layered(raw: dict, *, source: str | None = None) -> dict:
    """Raw nested dict (file + overrides) -> the same with every layer below the file filled in, untyped.

    Official spellings become the paper's names (schedule, norm, `init: trunc-normal`); then the method's norm and
    init, the scale's architecture and the recipe's values fill what the config leaves unset (an explicit warmup
    keeps the recipe's warmup out: WARMUP_KEYS). `resolve` types and checks the result; a grid's rule conditions
    read it before a cell is complete (study.grid.expand), so both see the same values. Returns a copy.
    """
    raw = json.loads(json.dumps(raw, default=str))  # deep copy of plain data
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level", source=source)
    for section in SECTIONS:
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
    if model.get("init") == "trunc-normal":  # = the normal init, truncated (default ±3·std, as OLMo 2)
        model["init"] = "normal"
        if model.get("init_truncation") is None:
            model["init_truncation"] = presets.TRUNC_NORMAL_BOUND

    method = raw.get("method")
    if method is not None:
        if method not in presets.METHODS:
            raise unknown_name("method", method, presets.METHODS, key="method", source=source)
        fixed = presets.METHODS[method]
        for k, v in (("norm", fixed.norm), ("init", fixed.init)):
            if model.get(k, v) != v:
                raise ConfigError(f"method '{method}' sets {k}={v!r} but the config says {model[k]!r}",
                                  key=f"model.{k}", source=source)
            model[k] = v

    scale = model.get("scale")
    if scale is not None:
        if scale not in presets.SCALES:
            raise unknown_name("scale", scale, presets.SCALES, key="model.scale", source=source)
        for k, v in presets.SCALES[scale].arch.items():
            model.setdefault(k, v)

    recipe = raw.get("recipe")
    if recipe is not None:
        if recipe not in presets.RECIPES:
            raise unknown_name("recipe", recipe, presets.RECIPES, key="recipe", source=source)
        explicit_warmup = any(k in raw["optim"] for k in WARMUP_KEYS)
        for section, values in presets.RECIPES[recipe](method, scale).items():
            for k, v in values.items():
                if not (section == "optim" and k in WARMUP_KEYS and explicit_warmup):
                    raw[section].setdefault(k, v)
    return raw


def resolve(raw: dict, *, source: str | None = None) -> RunConfig:
    """Raw nested dict (file + overrides) -> fully resolved RunConfig. Raises ConfigError on any problem."""
    cfg = from_dict(RunConfig, layered(raw, source=source), source=source)
    _validate(cfg, source)
    return cfg


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
         base: dict | None = None) -> RunConfig:
    """Load a run config: YAML file (or `base` dict) + 'a.b=c' overrides, resolved and validated."""
    file_raw = deep_merge(base or {}, read_yaml(path) if path else {})
    source = str(path) if path else None
    raw = json.loads(json.dumps(file_raw))
    given = []
    for text in overrides:
        key, value = parse_override(text)
        set_path(raw, key, value, source=f"--set {text}")
        given.append((key, value, text))
    try:
        return resolve(raw, source=source)
    except ConfigError as exc:  # blame a bad --set on the --set, not on the file
        text = next((t for k, _, t in given if exc.key and (exc.key == k or exc.key.startswith(k + ".")
                                                             or exc.key.startswith(k + "["))), None)
        if text is not None:
            raise ConfigError(exc.message, key=exc.key, source=f"--set {text}") from None
        culprit = _culprit(file_raw, given, source) if given else None
        if culprit is None:
            raise
        raise culprit from None


def _culprit(file_raw: dict, given: list, source: str | None) -> ConfigError | None:
    """The error of the first --set whose value makes a file that resolves on its own fail (a cross-field check:
    `--set model.d_model=100` breaks the file's n_heads), blamed on that --set; None when the file alone fails."""
    raw = json.loads(json.dumps(file_raw))
    try:
        resolve(raw, source=source)
    except ConfigError:
        return None
    for key, value, text in given:
        set_path(raw, key, value)
        try:
            resolve(raw, source=source)
        except ConfigError as exc:
            return ConfigError(exc.message, key=exc.key, source=f"--set {text}")
    return None


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
