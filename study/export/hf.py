"""A run's checkpoint as a Hugging Face model folder: safetensors, config.json, the run's tokenizer.

Two formats, chosen per checkpoint (`fmt='auto'`), or asked for:

* `llama`: plain `LlamaForCausalLM`, no remote code. Exact for a Pre-LN model whose alphas are all 1 (no ProRes,
  or ProRes after its warmup): our decoder is LLaMA's (RMSNorm in fp32 with the gain applied in the input dtype,
  rotate-half RoPE from `rope_theta`, causal SDPA, SwiGLU of silu, no biases, an untied head, one KV head per
  head, head_dim = d_model / n_heads), and alpha = 1 multiplies exactly (tested: fp32 logits torch.equal).
  Every other placement, or an alpha below 1 (a checkpoint mid-warmup), has no Llama equivalent: asked for
  `llama`, the export is refused with the reason.
* `prores`: the study's own parameter names and a self-contained modeling file (modeling_prores.py, beside this
  module, copied unchanged) loaded with `trust_remote_code=True`; every placement, alphas as trained.

The folder also holds export.json (run id and name, grid, step, format). Written into a temporary folder beside
`out` and renamed into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from study.config import run_id
from study.errors import CheckpointError, ExportError
from study.fsutil import atomic_dir
from study.model.norms import placement
from study.results import RunDir

FORMATS = ("auto", "llama", "prores")


def _dtype_key() -> str:
    """config.json's name for the weights' dtype: 'dtype' from transformers 5 on ('torch_dtype' warns there)."""
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


MODELING_FILE = Path(__file__).resolve().parent / "modeling_prores.py"


@dataclass
class ExportResult:
    out: Path
    fmt: str
    step: int


def llama_mismatch(model_cfg, alphas: list[float]) -> str | None:
    """Why this model is not exactly a LlamaForCausalLM, or None when it is (see the module docstring)."""
    if model_cfg.norm != "pre":
        return f"model.norm is {model_cfg.norm!r}; LlamaForCausalLM is Pre-LN only"
    below = [l for l, a in enumerate(alphas, 1) if a != 1.0]
    if below:
        return (f"alpha is below 1 in layer(s) {', '.join(map(str, below))} (a checkpoint mid-warmup); "
                f"LlamaForCausalLM has no residual multiplier")
    return None


def llama_state_dict(model) -> dict[str, torch.Tensor]:
    """Our Pre-LN parameters under LlamaForCausalLM's names (alpha = 1 leaves nothing to carry)."""
    out = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight,
           "lm_head.weight": model.head.weight}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = layer.attn.norm_in.weight
        out[p + "post_attention_layernorm.weight"] = layer.ffn.norm_in.weight
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{name}.weight"] = getattr(layer.attn.branch, name).weight
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[p + f"mlp.{name}.weight"] = getattr(layer.ffn.branch, name).weight
    return out


def _common_config(m, tok, dtype: torch.dtype) -> dict:
    return {
        "vocab_size": m.vocab_size, "hidden_size": m.d_model, "intermediate_size": m.ffn_hidden,
        "num_hidden_layers": m.n_layers, "num_attention_heads": m.n_heads,
        "max_position_embeddings": m.seq_len, "rms_norm_eps": m.norm_eps, "rope_theta": m.rope_theta,
        "tie_word_embeddings": False,
        # Training separates documents with EOS and scoring conditions an empty context on it: it is the BOS too.
        "bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
        _dtype_key(): str(dtype).removeprefix("torch."),
    }


def llama_config(m, tok, dtype: torch.dtype) -> dict:
    import transformers

    return {**_common_config(m, tok, dtype), "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "num_key_value_heads": m.n_heads, "head_dim": m.d_model // m.n_heads, "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "pretraining_tp": 1,
            # rope_theta above for transformers 4.x, rope_parameters for 5.x: both read the same value
            "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
            "transformers_version": transformers.__version__}


def placement_row(m) -> dict:
    """The model's row of the placement table (study.model.norms) as config.json carries it for modeling_prores.py:
    which norm slots are filled, and the residual constant c."""
    row = dataclasses.asdict(placement(m.norm, m.n_layers))
    del row["name"]  # config.json's `norm`
    return row


def prores_config(m, tok, dtype: torch.dtype) -> dict:
    import transformers

    module = MODELING_FILE.stem
    return {**_common_config(m, tok, dtype), "architectures": ["ProResForCausalLM"], "model_type": "prores",
            "norm": m.norm, "placement": placement_row(m), "transformers_version": transformers.__version__,
            "auto_map": {"AutoConfig": f"{module}.ProResConfig",
                         "AutoModelForCausalLM": f"{module}.ProResForCausalLM"}}


def _load(run_dir, step):
    from study.evaluate.load import load_for_eval

    rd = RunDir(run_dir)
    if not rd.path.is_dir() or not rd.exists():
        raise ExportError(f"{rd.path} is not a run directory (no config.yaml)")
    try:
        return rd, load_for_eval(rd.path, step=step)
    except CheckpointError as exc:  # no checkpoint, no such step, an unusable one: the user's input
        raise ExportError(str(exc)) from None


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder; export into a new or empty one")


def export_run(run_dir, out, *, step: int | str = "latest", fmt: str = "auto") -> ExportResult:
    """Write the run's checkpoint at `step` into `out` as a transformers model folder; `fmt` in FORMATS."""
    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    out = Path(out)
    _check_out(out)
    rd, loaded = _load(run_dir, step)
    model, m, tok = loaded.model, loaded.cfg.model, loaded.tokenizer
    alphas = [float(a) for a in model.alphas().tolist()]
    mismatch = llama_mismatch(m, alphas)
    if fmt == "llama" and mismatch:
        raise ExportError(f"{rd.path.name} step {loaded.step} is not a plain LlamaForCausalLM: {mismatch}; "
                          f"export with --format prores (or auto) to load it with trust_remote_code=True")
    chosen = fmt if fmt != "auto" else ("prores" if mismatch else "llama")
    dtype = model.embed.weight.dtype
    if chosen == "llama":
        tensors, config = llama_state_dict(model), llama_config(m, tok, dtype)
    else:
        tensors, config = dict(model.state_dict()), prores_config(m, tok, dtype)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    record = {"run_id": run_id(loaded.cfg), "run_name": rd.path.name, "grid": loaded.cfg.grid,
              "step": loaded.step, "format": chosen, "norm": m.norm, "alpha": alphas}
    with atomic_dir(out, replace=lambda p: p.is_dir() and not any(p.iterdir())) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}, indent=2) + "\n")
        tok.hf.save_pretrained(str(tmp))
        if chosen == "prores":
            shutil.copyfile(MODELING_FILE, tmp / MODELING_FILE.name)
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return ExportResult(out=out, fmt=chosen, step=loaded.step)
