"""FSDP meta-device build (study.train.parallel.build_sharded): 2 gloo processes on CPU build a tiny model on the
meta device, shard it and materialise only their shards, and the result equals the plain CPU build bit for bit
(init fingerprint over the full parameters, plus the buffers), for several inits and norm placements."""

from __future__ import annotations

import pytest
import torch

from tests.gloo import on_gloo_ranks

VARIANTS = [
    {"scale": "tiny"},
    {"scale": "tiny", "init": "deepnorm", "norm": "deepnorm"},
    {"scale": "tiny", "norm": "lns-gain", "init": "ds-init", "embed_std_rule": "sqrt-d"},
    {"scale": "tiny", "init": "trunc-normal", "vocab_size": 1001},  # a vocabulary that does not split evenly
]


def _configs():
    from study.config import resolve

    return [resolve({"model": v, "train": {"parallelism": "fsdp"}}) for v in VARIANTS]


def _rank_rows(rank: int) -> list[dict]:
    from study.model import init_fingerprint
    from study.train.parallel import build_sharded

    rows = []
    for cfg in _configs():
        torch.manual_seed(123)
        model = build_sharded(cfg.model, cfg.train, torch.device("cpu"))
        after = torch.rand(4).tolist()  # the RNG continues exactly as after a CPU build
        local = {n: tuple(p.to_local().shape) for n, p in model.named_parameters()}
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        rows.append({"fingerprint": init_fingerprint(model), "after": after,
                     "embed_rows": local["embed.weight"][0],
                     "buffers": {n: b.reshape(-1)[:8].tolist() for n, b in buffers.items()}})
    return rows


@pytest.mark.multiprocess
def test_meta_build_equals_the_cpu_build():
    from study.model import build_model, init_fingerprint

    rows = on_gloo_ranks(_rank_rows)
    for cfg, row in zip(_configs(), rows, strict=True):
        torch.manual_seed(123)
        ref = build_model(cfg.model)
        after = torch.rand(4).tolist()
        assert row["fingerprint"] == init_fingerprint(ref), cfg.model
        assert row["after"] == after
        assert row["embed_rows"] == (cfg.model.vocab_size + 1) // 2  # rank 0 holds only its half of the rows
        for name, b in ref.named_buffers():
            assert row["buffers"][name] == b.reshape(-1)[:8].tolist(), name
