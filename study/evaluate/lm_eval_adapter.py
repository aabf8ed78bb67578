"""Our model and tokenizer as an lm-eval `TemplateLM`, so the harness runs in process.

lm-eval turns every task into requests of three kinds; TemplateLM tokenises (context, continuation) pairs
exactly as lm-eval's HFLM does (trailing spaces of the context move to the continuation; an empty context is
conditioned on the prefix token, here EOS, which our packing puts between documents) and calls
`_loglikelihood_tokens`, which we implement:

* loglikelihood / multiple_choice: sum of log-softmax of the continuation tokens given the context (left-
  truncated to the model's context length, like HFLM) and whether greedy decoding would produce them;
* loglikelihood_rolling: lm-eval's rolling windows (`get_rolling_token_windows` with context_len=1,
  `make_disjoint_window`): every token of the text is scored exactly once with as much context as fits;
* generate_until: plain greedy decoding, no KV cache (for completeness; the paper's tasks do not generate).

Requests are sorted by length (longest first) and scored in batches of at most `batch_size` rows. Each row
is padded on the right to a width that depends on its own length only (the next multiple of `pad_multiple`),
and the model is causal, so a row's scores do not depend on the batch size or on its neighbours: on CPU in
fp32 they are bit-identical for every batch size (padding every row to the batch's longest row, as HFLM does,
changes the attention kernel's blocking and the last bits). Results come back in the original order.

The model's ProRes alphas are whatever the model holds: `load_for_eval` restores them from the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from tqdm import tqdm

from study import console
from study.perplexity import autocast, dtype_name


def _model_seq_len(model) -> int | None:
    for owner in (model, getattr(model, "cfg", None), getattr(model, "config", None)):
        value = getattr(owner, "seq_len", None) if owner is not None else None
        if isinstance(value, int):
            return value
    return None


class StudyLM(TemplateLM):
    """lm-eval LM over a study model (`model(input_ids) -> logits`) and a study tokenizer.

    batch_size: requests scored per forward pass (fixed; results do not depend on it).
    max_length: the context length (default: the model's seq_len).
    dtype: None/'fp32' or 'bf16' (autocast for the forward pass; log-softmax always in fp32).
    """

    backend = "causal"

    def __init__(self, model: torch.nn.Module, tokenizer, *, batch_size: int = 8, max_length: int | None = None,
                 device: str | torch.device = "cpu", dtype=None, max_gen_toks: int = 256,
                 pad_multiple: int = 64):
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tok = tokenizer
        self.tokenizer = getattr(tokenizer, "hf", None)  # lm-eval only uses it for chat templates
        self.batch_size = int(batch_size)
        self._device = torch.device(device)
        self.dtype = dtype
        self.dtype_name = dtype_name(dtype)
        self.max_length = int(max_length or _model_seq_len(model) or 2048)
        self.max_gen_toks = int(max_gen_toks)
        self.pad_multiple = max(1, int(pad_multiple))
        self.model.eval()

    # ---- identity ------------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tok.eos_id)

    @property
    def prefix_token_id(self) -> int:
        return int(self.tok.eos_id)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tok, "name", "study"))

    def get_model_info(self) -> dict:
        return {"model_class": type(self.model).__name__, "tokenizer": self.tokenizer_name,
                "max_length": self.max_length, "dtype": self.dtype_name, "eval_batch_size": self.batch_size}

    # ---- tokenisation --------------------------------------------------------------------------------
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return list(self.tok.encode(string))

    def tok_decode(self, tokens) -> str:
        return self.tok.decode(list(tokens))

    # ---- scoring -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _model_call(self, input_ids: torch.Tensor) -> torch.Tensor:
        with autocast(self._device, self.dtype):
            logits = self.model(input_ids.to(self._device))
        return logits.float()

    def _padded(self, length: int) -> int:
        """Padded width of a row of `length` tokens: the next multiple of pad_multiple (at most max_length)."""
        m = self.pad_multiple
        return min(self.max_length, -(-length // m) * m)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: [((context, continuation) | (None,), context_tokens, continuation_tokens)]."""
        self.model.eval()
        n = len(requests)
        inputs: list[list[int]] = []
        for _, ctx, cont in requests:
            if not cont:
                raise ValueError("lm-eval request with an empty continuation")
            if len(cont) > self.max_length:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds max_length {self.max_length}")
            # Left-truncate to max_length + 1 tokens and drop the last: the model predicts each token of the
            # continuation from everything before it (as HFLM does).
            inputs.append((list(ctx) + list(cont))[-(self.max_length + 1):][:-1])
        # Longest first; a batch only holds rows of the same padded width, and that width depends on the row
        # alone, so a row's numbers never depend on the batch size or on its neighbours.
        order = sorted(range(n), key=lambda i: (-len(inputs[i]), tuple(inputs[i]), tuple(requests[i][2])))
        batches: list[list[int]] = []
        for i in order:
            if (batches and len(batches[-1]) < self.batch_size
                    and self._padded(len(inputs[batches[-1][0]])) == self._padded(len(inputs[i]))):
                batches[-1].append(i)
            else:
                batches.append([i])
        results: list[tuple[float, bool] | None] = [None] * n
        pbar = tqdm(total=n, disable=disable_tqdm or not console.verbose(), desc="Running loglikelihood requests")
        for chunk in batches:
            width = self._padded(len(inputs[chunk[0]]))
            batch = torch.full((len(chunk), width), self.eot_token_id, dtype=torch.long)
            for row, i in enumerate(chunk):
                batch[row, :len(inputs[i])] = torch.tensor(inputs[i], dtype=torch.long)
            logits = self._model_call(batch)
            for row, i in enumerate(chunk):
                length, cont = len(inputs[i]), list(requests[i][2])
                lp = F.log_softmax(logits[row, length - len(cont):length], dim=-1)  # [len(cont), V]
                target = torch.tensor(cont, dtype=torch.long, device=lp.device)
                greedy = bool((lp.argmax(dim=-1) == target).all())
                score = float(lp.gather(-1, target[:, None]).squeeze(-1).double().sum())
                results[i] = (score, greedy)
                if requests[i][0] is not None and requests[i][0] != (None,):
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], (score, greedy))
            pbar.update(len(chunk))
        pbar.close()
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            token_windows = map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1))
            for ctx, cont in token_windows:
                windows.append(((None,), ctx, cont))
                owners.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for index, (score, _) in zip(owners, scores, strict=True):
            totals[index] += score
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding until a stop string, EOS or max_gen_toks (no KV cache: slow, but exact)."""
        self.model.eval()
        eos_text = self.tok_decode([self.eot_token_id])
        outputs = []
        for req in tqdm(requests, disable=disable_tqdm or not console.verbose(),
                        desc="Running generate_until requests"):
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.get("do_sample"):
                raise NotImplementedError("StudyLM.generate_until implements greedy decoding only (do_sample)")
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            if eos_text and eos_text not in until:
                until.append(eos_text)
            max_gen = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            if max_gen >= self.max_length:
                raise ValueError(f"max_gen_toks {max_gen} must be below max_length {self.max_length}")
            tokens = self.tok_encode(context) or [self.prefix_token_id]
            tokens = tokens[-(self.max_length - max_gen):]
            generated: list[int] = []
            text = ""
            for _ in range(max_gen):
                logits = self._model_call(torch.tensor([tokens + generated], dtype=torch.long))
                nxt = int(logits[0, -1].argmax())
                if nxt == self.eot_token_id:
                    break
                generated.append(nxt)
                text = self.tok_decode(generated)
                if any(stop in text for stop in until):
                    break
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            outputs.append(text)
            self.cache_hook.add_partial("generate_until", (context, req.args[1]), text)
        return outputs


def build_adapter(model, tokenizer, **kwargs: Any) -> StudyLM:
    """StudyLM(model, tokenizer, **kwargs): see StudyLM."""
    return StudyLM(model, tokenizer, **kwargs)
