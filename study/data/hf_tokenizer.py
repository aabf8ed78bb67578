"""`Tokenizer`, the wrapper every tokenizer of the study is used through, and a tokenizer's files on disk.

Below both study.data.tokenizer (which builds tokenizers, and loads the store's copy when data.store is on) and
the token store (study.data.store_prepare saves the tokenizer it tokenizes with; study.data.store_read loads that
copy back): the one piece they share lives here, so neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from study.data.hub import hub_reachable
from study.errors import DataError
from study.fsutil import atomic_dir


class Tokenizer:
    """A thin, picklable-enough wrapper with the contract's interface over a PreTrainedTokenizer(Fast)."""

    def __init__(self, hf, name: str):
        self.hf = hf
        self.name = name
        self._backend = getattr(hf, "backend_tokenizer", None)  # a tokenizers.Tokenizer for fast tokenizers
        eos = hf.eos_token_id
        if eos is None:
            raise DataError(f"tokenizer {name!r} has no EOS token; documents could not be separated")
        self.eos_id = int(eos)
        self.pad_id = int(hf.pad_token_id) if hf.pad_token_id is not None else self.eos_id
        self.vocab_size = len(hf)
        if self._backend is not None:
            blob = self._backend.to_str().encode()
        else:  # slow tokenizer: its vocabulary identifies it
            blob = repr(sorted(hf.get_vocab().items())).encode()
        self.fingerprint = hashlib.sha256(blob).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.hf.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]
        return [self.hf.encode(t, add_special_tokens=False) for t in texts]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=False)
        return self.hf.decode(ids, skip_special_tokens=False)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


_OFFLINE_HINT = ("without network, give data.tokenizer as a local folder holding tokenizer.json (or "
                 "tokenizer.model), or use data.tokenizer=default (a BPE trained offline on the bundled corpus)")


def load_hf_tokenizer(name: str):
    """A Hugging Face tokenizer by hub name or local folder, or a DataError that says what to do offline. A hub
    name is looked up in the local Hugging Face cache alone when the hub does not answer (study.data.hub): a
    name it does not hold fails at once, not after transformers' retries."""
    local = os.path.expanduser(name) if name.startswith("~") else name
    kwargs = {}
    if not Path(local).is_dir() and not hub_reachable():
        kwargs["local_files_only"] = True
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(local, **kwargs)
    except Exception as exc:  # OSError (offline / not found), ValueError, ImportError (sentencepiece) ...
        if kwargs:
            raise DataError(f"cannot load tokenizer {name!r}: not a local folder, the Hugging Face Hub cannot be "
                            f"reached and the local Hugging Face cache does not hold it; {_OFFLINE_HINT}") from None
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"cannot load tokenizer {name!r}: {type(exc).__name__}: {msg}; {_OFFLINE_HINT}") from None


def save_tokenizer(tok: Tokenizer, folder: Path) -> None:
    """Save the tokenizer's files into `folder` (atomically) with its name and fingerprint."""
    with atomic_dir(folder, replace=True) as tmp:
        tok.hf.save_pretrained(str(tmp))
        fast = getattr(tok, "_backend", None) is not None
        (tmp / "fingerprint.json").write_text(json.dumps({"name": tok.name, "fast": fast, "vocab_size": tok.vocab_size,
                                                          "eos_id": tok.eos_id}))


def load_tokenizer_dir(folder) -> Tokenizer:
    """A tokenizer saved by `save_tokenizer` (its files and the name it was built under)."""
    folder = Path(folder)
    try:
        name = json.loads((folder / "fingerprint.json").read_text())["name"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{folder}: not a saved tokenizer ({exc})") from None
    hf = load_hf_tokenizer(str(folder))
    hf.model_max_length = 1 << 30
    return Tokenizer(hf, name=name)
