"""Data: document sources, tokenizer, the packed training stream and held-out batches.

```python
from study.data import build_tokenizer, TrainStream, heldout_batches
tok = build_tokenizer(cfg.data, vocab_size=cfg.model.vocab_size)
stream = TrainStream(cfg.data, tok, seq_len=cfg.model.seq_len, seed=cfg.train.seed, rank=r, world_size=w)
batch = stream.next_batch(n)   # {'input_ids': Long[n, S], 'labels': Long[n, S] (-100 ignored), 'n_tokens': int}
stream.state_dict() / stream.load_state_dict(d)
stream = open_stream(cfg.data, tok, ...)   # same, from a prepared token store when cfg.data.store (StoreStream)
heldout_batches(cfg.data, tok, seq_len=, tokens=, batch_size=) -> list of batches
```
Modules: corpus (document sources, held-out split), tokenizer (hf_tokenizer: the Tokenizer wrapper and its saved
files), tokens (token cache of finite corpora), packing (TrainStream, heldout_batches), cache (atomic writes,
locks), store (the token store written once by `study data prepare`; store_manifest, store_units, store_prepare,
store_read, store_check, store_repair), store_stream (StoreStream: each rank reads its sequences from the store,
row by row).
"""

from study.data.corpus import documents, is_heldout
from study.data.packing import TrainStream, heldout_batches, open_stream
from study.data.tokenizer import EOS, Tokenizer, build_tokenizer

__all__ = ["EOS", "Tokenizer", "TrainStream", "build_tokenizer", "documents", "heldout_batches", "is_heldout",
           "open_stream"]
