"""Tokenizers: the offline default (a byte-level BPE trained on the default corpus) or any Hugging Face one.

`build_tokenizer(data_cfg, vocab_size)` returns a `Tokenizer`:
  encode(str) -> list[int]      no BOS/EOS added
  encode_batch(list[str]) -> list[list[int]]   (parallel, for corpora)
  decode(list[int]) -> str      special tokens kept
  eos_id, pad_id, vocab_size (ids are < vocab_size <= the model's), name, fingerprint (hash of the vocabulary
  and rules: the key of token caches), hf (a transformers.PreTrainedTokenizerFast, for lm-eval).

'default': byte-level BPE (GPT-2 pre-tokenization, no normalizer, so decode(encode(s)) == s) trained with the
`tokenizers` library on the TRAINING documents of the default corpus, `vocab_size` entries including the special
token '<|endoftext|>' (EOS and pad). Cached as JSON under `<cache_dir>/tokenizers/`, keyed by the corpus
content, held-out fraction, vocabulary size and tokenizers version; several processes starting at once train it
once (file lock) and the file is written atomically.
Anything else: a Hugging Face tokenizer name or local folder via `transformers.AutoTokenizer`.
The `Tokenizer` wrapper and a tokenizer's saved files live one module down (study.data.hf_tokenizer, re-exported
here), where the token store can use them without importing this module.
"""

from __future__ import annotations

from pathlib import Path

from study import fsutil
from study.data import cache, corpus
from study.data.hf_tokenizer import Tokenizer, load_hf_tokenizer, load_tokenizer_dir
from study.data.store_read import store_tokenizer
from study.errors import ConfigError, DataError

__all__ = ["BPE_FORMAT", "EOS", "MIN_BPE_VOCAB", "STATS", "Tokenizer", "build_tokenizer", "default_bpe",
           "default_bpe_path", "load_tokenizer_dir", "train_bpe"]

EOS = "<|endoftext|>"
BPE_FORMAT = 1  # bump when the BPE recipe changes
MIN_BPE_VOCAB = 257  # 256 byte symbols + EOS

# Counts BPE trainings in this process (tests check that a cached tokenizer is reused, not retrained).
STATS = {"bpe_trained": 0}


def build_tokenizer(data_cfg, vocab_size: int) -> Tokenizer:
    """The tokenizer named by `data_cfg.tokenizer`; its ids must fit in the model's `vocab_size`."""
    name = data_cfg.tokenizer
    if getattr(data_cfg, "store", False):  # the copy saved in the prepared token store (offline on compute nodes)
        tok = store_tokenizer(data_cfg, vocab_size)
    elif name == "default":
        tok = Tokenizer(_wrap_fast(default_bpe(data_cfg, vocab_size)), name=f"default-bpe-{vocab_size}")
    else:
        tok = Tokenizer(load_hf_tokenizer(name), name=name)
    if tok.vocab_size > vocab_size:
        raise DataError(f"tokenizer {tok.name!r} has {tok.vocab_size} tokens but model.vocab_size is {vocab_size}; "
                        f"set model.vocab_size >= {tok.vocab_size}")
    return tok


def _wrap_fast(tk):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS, pad_token=EOS)
    hf.model_max_length = 1 << 30
    return hf


def default_bpe_path(data_cfg, vocab_size: int) -> Path:
    """Where the default BPE for this corpus, held-out fraction and vocabulary size is cached."""
    import tokenizers

    key = cache.stable_hash({
        "format": BPE_FORMAT, "corpus": corpus.default_fingerprint(), "heldout_fraction": data_cfg.heldout_fraction,
        "vocab_size": vocab_size, "tokenizers": tokenizers.__version__,
    })
    return cache.cache_root(data_cfg, "tokenizers") / f"bpe-{vocab_size}-{key}.json"


def default_bpe(data_cfg, vocab_size: int):
    """The default byte-level BPE as a `tokenizers.Tokenizer`, trained on first use and cached."""
    from tokenizers import Tokenizer as TkTokenizer

    if vocab_size < MIN_BPE_VOCAB:  # bad input: exit 2, like a config error found earlier
        raise ConfigError(f"the default byte-level BPE needs model.vocab_size >= {MIN_BPE_VOCAB}, got {vocab_size}",
                          key="model.vocab_size")
    path = default_bpe_path(data_cfg, vocab_size)
    if not path.exists():
        with cache.locked(path):
            if not path.exists():
                tk = train_bpe((text for doc_id, text in corpus.default_documents()
                                if not corpus.is_heldout(doc_id, data_cfg.heldout_fraction)), vocab_size)
                fsutil.atomic_write_text(path, tk.to_str())
    try:
        return TkTokenizer.from_file(str(path))
    except Exception as exc:
        raise DataError(f"cached tokenizer {path} is unreadable ({exc}); delete it to retrain") from None


def train_bpe(texts, vocab_size: int):
    """Train a byte-level BPE with EOS as its only special token (id 0)."""
    from tokenizers import Tokenizer as TkTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tk = TkTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    STATS["bpe_trained"] += 1
    return tk
