"""torch.compile under FSDP, per Block (torchtitan's pattern; study.train.parallel.compile_blocks): 2 gloo
processes on CPU build the tiny model on the meta device with train.compile on, and
- every Block is compiled in place before fully_shard, the root is not, and parameter names are the eager ones
  (checkpoints and state_dict keys unchanged);
- training steps give the losses and weights of the same FSDP model run eagerly;
- changing the ProRes alphas between steps recompiles nothing (one compiled frame, reused by every Block);
- the same holds with activation checkpointing (applied by wrap after the meta build compiled the Blocks).

The backend is aot_eager (through AOTAutograd, where buffers such as alpha are lifted to graph inputs, as with
inductor) because inductor builds C++ kernels for tens of seconds per process on 2 busy cores.
"""

from __future__ import annotations

import pytest
import torch

from tests.gloo import on_gloo_ranks

STEPS = 4
# aot_eager runs the same aten kernels as eager on the same shards: measured differences are 0 here; the bound
# leaves room for a reordered reduction only. A Block left out, a stale alpha or a missing gradient gives > 1e-2.
RTOL = 1e-6


def _alphas(n_layers: int, step: int) -> torch.Tensor:
    """A ProRes-like warmup that changes every step and differs per layer."""
    return torch.linspace(0.25, 1.0, n_layers) * min(1.0, (step + 1) / STEPS)


def _train(model, forward, n_layers: int, rank: int) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own batch, as in data-parallel training
    losses = []
    for step in range(STEPS):
        model.set_alphas(_alphas(n_layers, step))
        ids = torch.randint(0, model.cfg.vocab_size, (2, 17), generator=gen)
        logits = forward(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def _rank_row(rank: int, world: int) -> dict:
    from torch._dynamo.testing import CompileCounterWithBackend

    from study.config import resolve
    from study.train.distributed import Dist
    from study.train.parallel import build_sharded, wrap

    row = {}
    counter = CompileCounterWithBackend("aot_eager")
    for mode in ("eager", "compiled", "compiled_ac"):
        cfg = resolve({"model": {"scale": "tiny"},
                       "train": {"parallelism": "fsdp", "compile": mode != "eager",
                                 "activation_checkpointing": mode == "compiled_ac"}})
        torch.manual_seed(7)
        model = build_sharded(cfg.model, cfg.train, torch.device("cpu"), compile_backend=counter)
        w = wrap(model, cfg.train, Dist(rank, world), torch.device("cpu"), compile_backend=counter)
        n_layers = len(model.layers)
        frames_before = counter.frame_count
        losses = _train(model, w.forward, n_layers, rank)
        row[mode] = {
            "losses": losses,
            "names": [n for n, _ in model.named_parameters()],
            "blocks_compiled": [blk._compiled_call_impl is not None for blk in model.layers],
            "root_compiled": model._compiled_call_impl is not None,
            "forward_is_model": w.forward is model,
            "frames": counter.frame_count - frames_before,
            "weights": {n: p.full_tensor().reshape(-1)[:64].tolist() for n, p in model.named_parameters()},
        }
    return row


@pytest.mark.multiprocess
def test_fsdp_compiles_each_block_and_trains_like_eager():
    row = on_gloo_ranks(_rank_row, 2)
    eager = row["eager"]
    assert eager["frames"] == 0 and not any(eager["blocks_compiled"])
    assert eager["losses"][0] != eager["losses"][-1]  # the steps train
    for mode in ("compiled", "compiled_ac"):
        compiled = row[mode]
        assert all(compiled["blocks_compiled"]) and not compiled["root_compiled"], mode
        assert compiled["forward_is_model"], mode  # no whole-model torch.compile wrapper around FSDP's hooks
        assert compiled["names"] == eager["names"], mode  # compiled in place: no `_orig_mod.` in names/checkpoints
        # One frame for the Block (all Blocks share its code), compiled at the first step; new alphas at every
        # step recompile nothing. (Guard failures would add frames.)
        assert compiled["frames"] == 1, mode
        torch.testing.assert_close(torch.tensor(compiled["losses"]), torch.tensor(eager["losses"]), rtol=RTOL, atol=0)
        for name, values in eager["weights"].items():
            torch.testing.assert_close(torch.tensor(compiled["weights"][name]), torch.tensor(values),
                                       rtol=RTOL, atol=RTOL, msg=lambda m, n=name, k=mode: f"{k} {n}: {m}")
