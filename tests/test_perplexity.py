"""Sharded held-out perplexity (study.perplexity): 2 gloo ranks, each scoring its share of the batches and
all-reducing (NLL sum, token count), give what one process gives over all of them; under FSDP (lockstep) every
rank runs the same number of forwards, the shorter share padding with a zero-weight batch.

The batches are uneven on purpose (5 batches over 2 ranks, one of them partly ignored labels), so a share left
out, a batch counted twice or a zero-weight batch that counted would move the loss or the token count."""

from __future__ import annotations

import pytest
import torch

from tests.gloo import on_gloo_ranks

pytestmark = pytest.mark.multiprocess
N_BATCHES = 5


def _model_and_batches():
    from study.config import resolve
    from study.model import build_model

    cfg = resolve({"model": {"scale": "tiny", "seq_len": 32}, "prores": {"schedule": "linear", "T": 3}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.set_alphas([1.0, 0.5, 0.25, 0.0])
    g = torch.Generator().manual_seed(1)
    batches = []
    for i in range(N_BATCHES):
        ids = torch.randint(0, cfg.model.vocab_size, (3, 32), generator=g)
        labels = torch.roll(ids, -1, dims=1)
        if i == 2:
            labels[:, :10] = -100  # a batch with fewer scored tokens: token weighting matters
        batches.append({"input_ids": ids, "labels": labels})
    return cfg, model, batches


def _sharded(rank: int, lockstep: bool) -> dict:
    from study.perplexity import perplexity
    from study.train import parallel
    from study.train.distributed import Dist

    cfg, model, batches = _model_and_batches()
    if lockstep:  # the trainer's FSDP2 wrapping: forward needs every rank
        parallel.shard(model, cfg.train, torch.device("cpu"), "fp32")
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    d = Dist.current()
    result = perplexity(model, batches, rank=d.rank, world=d.world, lockstep=lockstep)
    counts = d.gather(len(forwards))
    return {**result, "forwards": counts}


@pytest.mark.parametrize("lockstep", [False, True], ids=["ddp", "fsdp"])
def test_two_ranks_give_the_single_process_value(lockstep):
    from study.perplexity import perplexity

    _, model, batches = _model_and_batches()
    one = perplexity(model, batches)
    two = on_gloo_ranks(_sharded, lockstep, world=2)
    assert two["tokens"] == one["tokens"] == 4 * 3 * 32 + 3 * 22
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
    # ranks 0 and 1 own batches {0, 2, 4} and {1, 3}; in lockstep rank 1 runs one more forward, weighted 0
    assert two["forwards"] == ([3, 3] if lockstep else [3, 2])
