"""Synthetic run directories that follow the results contract (docs/ARCHITECTURE.md, "results").

`make_synthetic_root(root)` writes a small results root with every kind of run the collection, the figures, the
tables and the notebooks must handle, and returns a manifest of what it wrote (expected states, table values,
run names) so tests can check answers without hard-coding them twice:

  main/        Pre-LN and Post-LN ± ProRes at 130M, Pre-LN ± ProRes at 1.3B (with lm_eval.json, probes.jsonl and
               probes/step_*.pt for Figures 3/4), and Pre-LN ± ProRes at 130M trained on ClimbMix (Table 7)
  depth/       71M width at 12/24/48 layers: Pre-LN, Pre-LN (ProRes), Pre-LN (ProRes-equal), Sandwich-LN
               (Figures 1/2); baselines carry loss and grad-norm spikes that grow with depth, ProRes runs none
  schedules/   350M (24 layers) schedule ablation cells of Table 6, one of them diverged (NaN tail)
  7b/          Pre-LN ± ProRes at 7B for Figure 5 (W = T·L and the WSD decay start known)
  broken/      a running run, a failed run, an incomplete run (no status.json, truncated last metrics line),
               a run whose config.yaml is not YAML, and a run without run.json

`write_cell(root, cell, ppl)` / `write_grid(root, grid, ppl)` write the runs of real grid cells (their axes, seeds
and run ids) with chosen perplexities: the design, claims and plan tests use them.
`write_bulk_root(root, n_runs, rows)` writes many runs fast (for benchmarks/collect_speed.py).
The configs are real resolved configs (study.config), so run ids, W and the LR schedule are what training writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from study import config, paper_tasks, presets, prores

STEPS = 1200          # optimizer steps of every synthetic run (metrics logged at every step)
EVAL_EVERY = 100
PROBE_EVERY = 50
PAPER_TASKS = paper_tasks.ZERO_SHOT  # Table 3's lm-eval tasks
TABLE3_COLUMN = {t.task: t.column for t in paper_tasks.of_table("table3")}  # lm-eval task -> Table 3 column
NO_ACC_NORM = ("social_iqa", "winogrande", "race", "lambada_openai", "mmlu")  # lm-eval: acc only


def _cfg(*, grid, method, scale, schedule="none", T=None, steps=STEPS, data=None, probe_every=0, lr=None,
         train_seed=None, eval_every=EVAL_EVERY):
    raw = {"method": method, "recipe": "paper", "grid": grid, "model": {"scale": scale},
           "prores": {"schedule": schedule, **({"T": T} if T is not None else {})},
           "train": {"steps": steps, "log_every": 1, "probe_every": probe_every,
                     **({"seed": train_seed} if train_seed is not None else {})},
           "eval": {"every": eval_every}}
    if data:
        raw["data"] = data
    if lr is not None:
        raw["optim"] = {"lr": lr}
    return config.resolve(raw)


def _clean(v):
    """Non-finite floats as the strings 'nan' / 'inf' / '-inf', as study.results writes them."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _dumps(row) -> str:
    return json.dumps(_clean(row))


def write_run(root, *, grid: str, method: str, scale: str, schedule: str = "none", T: float | None = None,
              steps: int = STEPS, final_ppl: float = 20.0, seed: int = 0, spikes: int = 0,
              state: str = "completed", upto: int | None = None, diverge_at: int | None = None,
              data: dict | None = None, eval_dataset: str = "default", probes: bool = False,
              lm_eval: dict | None = None, lr: float | None = None, truncate_metrics: bool = False,
              no_status: bool = False, no_run_json: bool = False, corrupt_config: bool = False,
              error: str | None = None, train_seed: int | None = None, eval_every: int = EVAL_EVERY,
              probe_every: int = PROBE_EVERY) -> Path:
    """One run directory. The train loss decays to log(final_ppl) - 0.05; eval loss ends at log(final_ppl).

    spikes: number of single-step loss spikes (+3.0) and grad-norm spikes (x20) placed inside 10-90% of training.
    diverge_at: the loss turns NaN from this step on (state 'diverged'); upto: last written step.
    seed: seeds only the synthetic noise; train_seed sets the config's train.seed (a seed sibling: another run id).
    """
    cfg = _cfg(grid=grid, method=method, scale=scale, schedule=schedule, T=T, steps=steps, data=data,
               probe_every=probe_every if probes else 0, lr=lr, train_seed=train_seed, eval_every=eval_every)
    rid = config.run_id(cfg)
    name = f"{method}-{schedule}-{scale}-{rid[:6]}"
    run = Path(root) / grid / name
    run.mkdir(parents=True, exist_ok=True)
    L = cfg.model.n_layers
    rng = np.random.default_rng(seed)
    last = upto or steps
    if diverge_at is not None:
        last = min(last, diverge_at + 5)

    (run / "config.yaml").write_text("model: [unclosed\n  : : :\n" if corrupt_config else config.dump_yaml(cfg))
    if not no_run_json:
        info = {"run_id": rid, "run_name": name, "grid": grid,
                "axes": {"method": method, "schedule": schedule, "scale": scale, **({"T": T} if T else {})},
                "method": method, "schedule": schedule, "scale": scale,
                "params": getattr(presets.SCALES.get(scale), "official_params", None),
                "W": cfg.prores.W, "T": cfg.prores.T,
                "provenance": {"git_commit": "0" * 40, "git_dirty": False, "versions": {"torch": "2.13.0"},
                               "host": "synthetic", "argv": ["study", "run"], "slurm_job_id": None,
                               "slurm_array_job_id": None, "slurm_array_task_id": None,
                               "started": "2026-03-10T00:00:00+00:00"},
                "init_fingerprint": rid[::-1]}
        (run / "run.json").write_text(json.dumps(info, indent=1))

    # metrics
    t = np.arange(1, last + 1)
    final_loss = math.log(final_ppl) - 0.05
    loss = final_loss + 3.0 * np.exp(-t / (steps / 8)) + rng.normal(0, 0.01, t.size)
    gnorm = 0.3 + 0.5 * np.exp(-t / (steps / 10)) + np.abs(rng.normal(0, 0.01, t.size))
    spike_steps = np.linspace(0.2 * steps, 0.8 * steps, spikes).astype(int) if spikes else np.array([], int)
    for s in spike_steps:
        if s <= last:
            loss[s - 1] += 3.0
            gnorm[s - 1] *= 20
    if diverge_at is not None:
        loss[diverge_at - 1:] = np.nan
        gnorm[diverge_at - 1:] = np.nan
    lr_peak = cfg.optim.lr
    lines = []
    for i, s in enumerate(t):
        alpha = prores.alphas(schedule, s, L, cfg.prores.T).round(6).tolist() if s % 10 == 0 else None
        # as study.train.loop writes: alpha on the last row of each log batch (here every 10th), else null
        lines.append(_dumps({"step": int(s), "loss": float(loss[i]), "lr": lr_peak, "grad_norm": float(gnorm[i]),
                             "tokens": int(s) * 512 * 1024, "tokens_per_s": 1.0e5, "mfu": None,
                             "alpha": alpha if s % 10 == 0 else None, "time": 1.77e9 + float(s) * 0.1}))
    text = "\n".join(lines) + "\n"
    if truncate_metrics:
        text = text + f'{{"step": {last + 1}, "loss": 3.1'  # killed mid-write
    (run / "metrics.jsonl").write_text(text)

    # eval
    ev = []
    for s in range(eval_every, last + 1, eval_every):
        if diverge_at is not None and s >= diverge_at:
            el = float("nan")
        else:
            el = math.log(final_ppl) + 3.0 * math.exp(-s / (steps / 8)) * (s < steps)
        ev.append({"step": s, "dataset": eval_dataset, "split": "validation", "loss": el,
                   "ppl": math.exp(el) if el == el else float("nan"), "tokens": 65536,
                   "seq_len": cfg.model.seq_len, "source": "train"})
    (run / "eval.jsonl").write_text("".join(_dumps(r) + "\n" for r in ev))

    if probes:
        _write_probes(run, cfg, last, schedule, rng, probe_every)
    if lm_eval is not None:
        (run / "lm_eval.json").write_text(json.dumps(_lm_eval_json(lm_eval, last), indent=1))

    if not no_status:
        st = {"state": state, "step": int(last if diverge_at is None else diverge_at),
              "updated": "2026-03-11T00:00:00+00:00", "error": error,
              "diverged_step": diverge_at, "job_id": None}
        (run / "status.json").write_text(json.dumps(st))
    return run


def write_cell(root, cell, final_ppl: float, *, logged: int = 40, spikes: int = 0, state: str = "completed",
               run_dir: Path | None = None, hours: float = 1.0) -> Path:
    """The run directory `study run` would make for a grid cell (its resolved config, axes and run id), with
    `logged` metric rows spread over the cell's steps, `spikes` loss spikes (+3.0) inside 10-90% of training,
    a wall time of `hours` (metrics' time column) and a final held-out perplexity `final_ppl`. run_dir: write
    it elsewhere (a second copy of one run, for the duplicate-seed tests)."""
    from study.model import info as model_info

    cfg = cell.config
    run = Path(run_dir or cell.run_dir(root))
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(config.dump_yaml(cfg))
    run_info = {"run_id": cell.run_id, "run_name": cell.run_name, "grid": cell.grid, "axes": cell.axes,
                "method": cfg.method, "schedule": cfg.prores.schedule, "scale": cfg.model.scale,
                "n_layers": cfg.model.n_layers, "params": model_info(cfg.model)["params"], "W": cfg.prores.W,
                "T": cfg.prores.T, "provenance": {"git_commit": "0" * 40, "host": "synthetic"}}
    (run / "run.json").write_text(json.dumps(run_info, indent=1))
    steps = cfg.train.steps
    at = np.unique(np.linspace(1, steps, logged).round().astype(int))
    final_loss = math.log(final_ppl) - 0.05
    loss = final_loss + 3.0 * np.exp(-at / (steps / 8))
    for i in np.linspace(0.2 * len(at), 0.8 * len(at), spikes).astype(int) if spikes else []:
        loss[i] += 3.0
    t0 = 1.77e9
    lines = [_dumps({"step": int(s), "loss": float(v), "lr": cfg.optim.lr, "grad_norm": 0.5, "tokens": int(s) * 1024,
                     "tokens_per_s": 1.0e5, "mfu": None, "alpha": None, "time": t0 + hours * 3600 * s / steps})
             for s, v in zip(at, loss, strict=True)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    ev = {"step": int(steps), "dataset": "default", "split": "validation", "loss": math.log(final_ppl),
          "ppl": final_ppl, "tokens": 65536, "seq_len": cfg.model.seq_len, "source": "train"}
    (run / "eval.jsonl").write_text(_dumps(ev) + "\n")
    (run / "status.json").write_text(json.dumps({"state": state, "step": int(steps), "updated": None, "error": None,
                                                 "diverged_step": None, "job_id": None}))
    return run


def write_grid(root, grid, ppl, **kw) -> list[Path]:
    """write_cell for every cell of `grid` (a Grid, or a grid file's text), ppl(cell) -> its final perplexity."""
    from study.grid import load_grid

    if isinstance(grid, str):
        path = Path(root) / ".grids" / f"g{abs(hash(grid))}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(grid)
        grid = load_grid(path)
    return [write_cell(root, c, ppl(c), **kw) for c in grid.all_cells]


def _write_probes(run: Path, cfg, last: int, schedule: str, rng, every: int) -> None:
    import torch

    L, steps = cfg.model.n_layers, cfg.train.steps
    rows = []
    (run / "probes").mkdir(exist_ok=True)
    final = torch.from_numpy(rng.normal(size=(L, 4, 16))).float()
    prores_on = schedule != "none"
    for s in range(0, last + 1, every):
        a = prores.alphas(schedule, s, L, cfg.prores.T)
        frac = s / steps
        for layer in range(1, L + 1):
            # Pre-LN: activation norm grows with depth; ProRes keeps it lower (paper Figure 3)
            act = (1 + layer * (0.6 if not prores_on else 0.25)) * (1 + frac)
            rows.append({"step": s, "layer": layer, "act_norm": act, "branch_norm_attn": 0.5 + 0.01 * layer,
                         "branch_norm_ffn": 0.7 + 0.01 * layer, "alpha": float(a[layer - 1])})
        # branch outputs converge to the final ones; faster with ProRes in the deep layers
        mix = frac * (2.0 if prores_on else 1.0)
        noise = torch.from_numpy(rng.normal(size=(L, 4, 16))).float()
        branch = final * min(mix * 4, 1.0) + noise * max(1 - mix * 4, 0.05)
        torch.save({"step": s, "branch": branch.half()}, run / "probes" / f"step_{s:07d}.pt")
    (run / "probes.jsonl").write_text("".join(_dumps(r) + "\n" for r in rows))


def _lm_eval_json(scores: dict, step: int) -> dict:
    """scores: task -> accuracy in percent (paper units); wikitext/lambada_ppl -> perplexities."""
    results = {}
    for task, value in scores.items():
        if task == "wikitext":
            results[task] = {"alias": task, "word_perplexity,none": value, "word_perplexity_stderr,none": "N/A",
                             "byte_perplexity,none": 1.7, "byte_perplexity_stderr,none": "N/A",
                             "bits_per_byte,none": 0.77, "bits_per_byte_stderr,none": "N/A"}
            continue
        if task == "lambada_ppl":
            results.setdefault("lambada_openai", {"alias": "lambada_openai"}).update(
                {"perplexity,none": value, "perplexity_stderr,none": 0.5})
            continue
        entry = results.setdefault(task, {"alias": task})
        # acc_norm carries the paper's number where the task has it; acc is 1 point lower
        if task in NO_ACC_NORM:
            entry.update({"acc,none": value / 100, "acc_stderr,none": 0.01})
        else:
            entry.update({"acc,none": (value - 1) / 100, "acc_stderr,none": 0.01,
                          "acc_norm,none": value / 100, "acc_norm_stderr,none": 0.01})
    groups = {}
    if "mmlu" in results:  # lm-eval reports groups under 'groups' (and, in 0.4.x, in 'results' too)
        groups["mmlu"] = results.pop("mmlu")
        results["mmlu_abstract_algebra"] = {"alias": " - abstract_algebra", "acc,none": 0.25,
                                            "acc_stderr,none": 0.04}
    return {"lm_eval_version": "0.4.9", "step": step, "batch_size": 8, "dtype": "float32", "results": results,
            "groups": groups, "versions": {k: 1.0 for k in results}, "n-shot": {k: 0 for k in results}}


def _paper(table: str) -> list[dict]:
    import csv

    ref = Path(__file__).resolve().parents[1] / "paper_figures" / "reference"
    name = {"t2": "table2_c4_ppl.csv", "t3": "table3_zeroshot_1.3B.csv", "t6": "table6_schedule_ablation_350M.csv",
            "t4": "table4_ood_ppl_1.3B.csv", "t7": "table7_climbmix_ppl.csv"}[table]
    with open(ref / name) as fh:
        return list(csv.DictReader(fh))


def _cell(rows, **match) -> dict:
    for r in rows:
        if all(r[k] == v for k, v in match.items()):
            return r
    raise KeyError(match)


def make_synthetic_root(root, *, steps: int = STEPS) -> dict:
    """Write the synthetic root described in the module docstring; returns its manifest."""
    root = Path(root)
    t2, t3, t4, t6, t7 = (_paper(k) for k in ("t2", "t3", "t4", "t6", "t7"))
    man = {"root": str(root), "runs": {}, "states": {}, "table2": {}, "table3": {}, "table4": {}, "table6": {},
           "table7": {}, "depths": [12, 24, 48], "steps": steps}

    def add(key, **kw):
        kw.setdefault("steps", steps)
        path = write_run(root, **kw)
        man["runs"][key] = path.name
        return path

    # --- main: Table 2 (130M Pre-LN/Post-LN, 1.3B Pre-LN), Tables 3/4 (1.3B with lm_eval), Figures 3/4 ---
    seed = 0
    for method, scale in (("pre-ln", "130m"), ("post-ln", "130m"), ("pre-ln", "1.3b")):
        for on in (False, True):
            seed += 1
            label = presets.METHODS[method].label
            paper = float(_cell(t2, method=label, prores=str(on).lower(),
                                scale={"130m": "130M", "1.3b": "1.3B"}[scale])["ppl"])
            ours = round(paper * 1.02, 4)  # 2% worse than the paper
            lm = None
            if scale == "1.3b":
                p3 = _cell(t3, method=label, prores=str(on).lower())
                p4 = _cell(t4, method=label, prores=str(on).lower())
                lm = {task: float(p3[TABLE3_COLUMN[task]]) + 0.5 for task in PAPER_TASKS}
                lm["wikitext"] = float(p4["wikitext"]) + 1.0
                lm["lambada_ppl"] = float(p4["lambada"]) + 1.0
                man["table3"][(label, on)] = {k: v for k, v in lm.items() if k in PAPER_TASKS}
                man["table4"][(label, on)] = {"wikitext": lm["wikitext"], "lambada": lm["lambada_ppl"]}
            add(f"main/{method}/{scale}/{'prores' if on else 'base'}", grid="main", method=method, scale=scale,
                schedule="linear" if on else "none", T=10 if on else None, final_ppl=ours, seed=seed,
                probes=(scale == "1.3b"), lm_eval=lm, spikes=0 if on else 2)
            man["table2"][(label, on, {"130m": "130M", "1.3b": "1.3B"}[scale])] = ours
    # ClimbMix (Table 7): Pre-LN ± ProRes at 130M trained on ClimbMix
    for on in (False, True):
        paper = float(_cell(t7, method="Pre-LN", prores=str(on).lower(), scale="130M")["ppl"])
        ours = round(paper + 0.1, 4)
        add(f"climbmix/{'prores' if on else 'base'}", grid="climbmix", method="pre-ln", scale="130m",
            schedule="linear" if on else "none", T=10 if on else None, final_ppl=ours, seed=50 + on,
            data={"source": "hf", "hf_path": "nvidia/ClimbMix"}, eval_dataset="climbmix")
        man["table7"][("Pre-LN", on, "130M")] = ours

    # --- depth: Figures 1/2 ---
    depth_scales = {12: "71m", 24: "71m-24l", 48: "71m-48l"}
    for L, scale in depth_scales.items():
        for method, schedule, T in (("pre-ln", "none", None), ("pre-ln", "linear", 2), ("pre-ln", "equal", 24),
                                    ("sandwich-ln", "none", None)):
            seed += 1
            base = {"none": 20 - L / 24, "linear": 20 - L / 12, "equal": 20.2 - L / 16}[schedule]
            add(f"depth/{method}/{schedule}/{L}", grid="depth", method=method, scale=scale, schedule=schedule, T=T,
                final_ppl=base + (0.5 if method == "sandwich-ln" else 0), seed=seed,
                spikes=(L // 12) * 2 if schedule == "none" and method == "pre-ln" else 0)

    # --- schedules: Table 6 (350M, 24 layers); W = T·24 (equal: W = T) ---
    cells = [("pre-ln", "none", None), ("pre-ln", "linear", 500), ("pre-ln", "equal", 1000), ("pre-ln", "fix-L", None),
             ("sandwich-ln", "linear", 1000), ("post-ln", "equal", 12000)]
    col = {m: presets.METHODS[m].table_column for m in ("pre-ln", "post-ln", "sandwich-ln")}
    for method, schedule, T in cells:
        seed += 1
        W = prores.total_warmup(schedule, 24, T) if T else None
        diverged = method == "post-ln"
        row = _cell(t6, schedule=schedule, warmup_total_steps="" if W is None else str(int(W)))
        ours = None if diverged else round(float(row[col[method]]) - 0.05, 4)
        add(f"schedules/{method}/{schedule}/{T}", grid="schedules", method=method, scale="350m", schedule=schedule,
            T=T, final_ppl=ours or 30.0, seed=seed, state="diverged" if diverged else "completed",
            diverge_at=steps // 3 if diverged else None,
            error="loss is nan" if diverged else None)
        man["table6"][(schedule, None if W is None else int(W), col[method])] = "diverged" if diverged else ours
    man["diverged"] = man["runs"]["schedules/post-ln/equal/12000"]
    man["diverged_step"] = steps // 3

    # --- 7b: Figure 5 ---
    for on in (False, True):
        add(f"7b/{'prores' if on else 'base'}", grid="7b", method="pre-ln", scale="7b",
            schedule="linear" if on else "none", T=10 if on else None, final_ppl=9.0 - 0.3 * on, seed=90 + on)
    man["fig5"] = {"W": 10 * 32, "decay_start": steps * (1 - 0.1)}

    # --- broken runs ---
    b = {}
    b["running"] = add("broken/running", grid="broken", method="pre-ln", scale="130m", schedule="linear", T=5,
                       state="running", upto=steps // 2, seed=101, lr=1.1e-3)
    b["failed"] = add("broken/failed", grid="broken", method="post-ln", scale="130m", state="failed",
                      upto=steps // 4, seed=102, error="RuntimeError: CUDA out of memory", lr=1.2e-3)
    b["partial"] = add("broken/partial", grid="broken", method="deepnorm", scale="130m", upto=steps // 5,
                       no_status=True, truncate_metrics=True, seed=103, lr=1.3e-3)
    b["bad_config"] = add("broken/bad_config", grid="broken", method="lns", scale="130m", corrupt_config=True,
                          seed=104, lr=1.4e-3)
    b["no_run_json"] = add("broken/no_run_json", grid="broken", method="sandwich-ln", scale="130m",
                           no_run_json=True, seed=105, lr=1.5e-3)
    man["broken"] = {k: v.name for k, v in b.items()}
    man["states"] = {"partial": 1, "running": 1, "failed": 1, "diverged": 1}
    man["n_runs"] = len(man["runs"])
    return man


def write_paper_main_root(root, *, steps: int = 100_000) -> int:
    """The shape of grids/paper/main.yaml's results: its 42 runs (seven methods, without and with ProRes linear
    T = 1000, at 130M, 350M and 1.3B), each with `steps` metric rows, held-out evals and probes every 1000 steps
    (small probe tensors), lm_eval.json at 1.3B; final perplexities 2% above Table 2's. Returns the run count."""
    t2, t3, t4 = _paper("t2"), _paper("t3"), _paper("t4")
    n = 0
    for method, spec in presets.METHODS.items():
        label = spec.label
        for scale, paper_scale in (("130m", "130M"), ("350m", "350M"), ("1.3b", "1.3B")):
            for on in (False, True):
                lm = None
                if scale == "1.3b":
                    p3, p4 = (_cell(t, method=label, prores=str(on).lower()) for t in (t3, t4))
                    lm = {task: float(p3[TABLE3_COLUMN[task]]) + 0.5 for task in PAPER_TASKS}
                    lm.update(wikitext=float(p4["wikitext"]) + 1.0, lambada_ppl=float(p4["lambada"]) + 1.0)
                ppl = float(_cell(t2, method=label, prores=str(on).lower(), scale=paper_scale)["ppl"]) * 1.02
                write_run(root, grid="paper-main", method=method, scale=scale, schedule="linear" if on else "none",
                          T=1000 if on else None, steps=steps, final_ppl=ppl, seed=n, probes=True, lm_eval=lm,
                          spikes=0 if on else 2, eval_every=1000, probe_every=1000)
                n += 1
    return n


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """(root path, manifest) of a synthetic results root, written once per test session."""
    root = tmp_path_factory.mktemp("synthetic") / "results"
    manifest = make_synthetic_root(root)
    return root, manifest


# ---------------------------------------------------------------------------------------------------
# Bulk root for the benchmark: n_runs runs of `rows` metric rows each, written from a few templates
# ---------------------------------------------------------------------------------------------------
def write_bulk_root(root, n_runs: int = 1000, rows: int = 10_000, *, layers: int = 12, variants: int = 8) -> dict:
    """A large root quickly: metrics files are rendered once per variant and written n_runs times."""
    root = Path(root)
    rng = np.random.default_rng(0)
    templates = []
    for v in range(variants):
        schedule = "linear" if v % 2 else "none"
        T = max(rows // (10 * layers), 1)
        t = np.arange(1, rows + 1)
        loss = 2.5 + 3.0 * np.exp(-t / (rows / 8)) + rng.normal(0, 0.02, rows)
        gn = 0.3 + np.abs(rng.normal(0, 0.05, rows))
        lines = []
        for i, s in enumerate(t.tolist()):
            alpha = prores.alphas(schedule, s, layers, T).tolist() if s % 10 == 0 else None  # as the trainer
            lines.append(json.dumps({"step": s, "loss": float(loss[i]), "lr": 1e-3 * min(1.0, s / 100),
                                     "grad_norm": float(gn[i]), "tokens": s * 524288,
                                     "tokens_per_s": 123456.7 + i % 97, "mfu": 0.41, "alpha": alpha,
                                     "time": 1.77e9 + s * 0.35}))
        templates.append(("\n".join(lines) + "\n").encode())
    evals = "".join(json.dumps({"step": s, "dataset": "default", "split": "validation", "loss": 3.0, "ppl": 20.1,
                                "tokens": 65536, "seq_len": 1024, "source": "train"}) + "\n"
                    for s in range(1000, rows + 1, 1000)).encode()
    base_cfgs = {}
    for i in range(n_runs):
        v = i % variants
        schedule = "linear" if v % 2 else "none"
        key = (schedule, i % 50)
        if key not in base_cfgs:
            cfg = _cfg(grid="bulk", method="pre-ln", scale="tiny-12l", schedule=schedule,
                       T=max(rows // (10 * layers), 1) if schedule != "none" else None, steps=rows,
                       lr=1e-3 * (1 + (i % 50) / 100))
            base_cfgs[key] = (config.dump_yaml(cfg), config.run_id(cfg))
        text, rid = base_cfgs[key]
        rid = f"{rid[:6]}{i:06d}"
        run = root / "bulk" / f"run-{i:04d}-{rid}"
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(text)
        (run / "run.json").write_text(json.dumps({"run_id": rid, "run_name": run.name, "grid": "bulk",
                                                  "axes": {"i": i}, "method": "pre-ln", "schedule": schedule,
                                                  "scale": "tiny-12l", "params": 1e6, "W": None, "T": None}))
        (run / "status.json").write_text(json.dumps({"state": "completed", "step": rows, "updated": None,
                                                     "error": None, "diverged_step": None, "job_id": None}))
        (run / "metrics.jsonl").write_bytes(templates[v])
        (run / "eval.jsonl").write_bytes(evals)
    return {"runs": n_runs, "rows_per_run": rows, "metric_rows": n_runs * rows,
            "metrics_bytes": sum(len(templates[i % variants]) for i in range(n_runs))}


def root_from_param(request, param: str):
    """The results root behind a ROOTS entry of the test modules: a fixture name (its value, or the first item of
    a tuple), or 'env' for STUDY_TEST_RESULTS_ROOT. A fixture that does not exist skips the test."""
    import os

    if param == "env":
        return os.environ["STUDY_TEST_RESULTS_ROOT"]
    try:
        value = request.getfixturevalue(param)
    except pytest.FixtureLookupError:
        pytest.skip(f"no `{param}` fixture in this checkout")
    return value[0] if isinstance(value, tuple) else value
