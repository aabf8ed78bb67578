"""Per-layer probes on a fixed held-out batch: what the paper's Figures 3 and 4 are drawn from.

probes.jsonl gets one row per layer and probe step (activation norm of the layer's output, norms of its
attention and FFN branch outputs, its alpha); probes/step_XXXXXXX.pt keeps the branch outputs themselves
(half precision) so cosine similarities to the final checkpoint can be computed after training.
"""

from __future__ import annotations

import io

import torch

from study.fsutil import atomic_write_bytes
from study.train.checkpoint import step_dir_name


class ProbeWriter:
    def __init__(self, run_dir, cfg, probe_batch: torch.Tensor):
        self.rd, self.cfg = run_dir, cfg
        self.batch = probe_batch

    def write(self, model, step: int) -> None:
        was_training = model.training
        device = next(model.parameters()).device
        out = model.probe(self.batch.to(device))
        if was_training:
            model.train()
        alphas = model.alphas().tolist()
        for layer in range(len(alphas)):
            self.rd.append_jsonl("probes.jsonl", {
                "step": step, "layer": layer + 1,
                "act_norm": float(out["act_norm"][layer]),
                "branch_norm_attn": float(out["branch_norm_attn"][layer]),
                "branch_norm_ffn": float(out["branch_norm_ffn"][layer]),
                "alpha": alphas[layer],
            })
        folder = self.rd.path / "probes"
        folder.mkdir(exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"step": step, "branch": out["branch"].detach().to("cpu", torch.float16)}, buffer)
        atomic_write_bytes(folder / f"{step_dir_name(step)}.pt", buffer.getvalue(), fsync=False)
