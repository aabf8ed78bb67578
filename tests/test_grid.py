"""Grid files: the paper's studies cell for cell, CPU grids, malformed grids, `study grid` and `study run`.

Fast: grids are expanded and resolved, nothing is trained (study.train is replaced by a fake where needed).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from study import config as C
from study.cli import main
from study.errors import ConfigError
from study.grid import estimate, load_grid, run_name

REPO = Path(__file__).resolve().parent.parent
GRIDS = REPO / "grids"
BAD = Path(__file__).resolve().parent / "grids_bad"

try:
    import study.model  # noqa: F401

    HAVE_MODEL = True
except ImportError:  # study.model is written in parallel; only the params assertions need it
    HAVE_MODEL = False

METHODS = ["pre-ln", "pre-ln-ds-init", "pre-ln-scaled-init", "sandwich-ln", "lns", "post-ln", "deepnorm"]

# Paper §3 / Appendix A: searched learning rate per scale and the per-method exceptions.
PAPER_LR = {"130m": 2e-3, "350m": 1e-3, "1.3b": 6e-4}
PAPER_LR_EXCEPTIONS = {("130m", "post-ln"): 1e-3, ("130m", "deepnorm"): 1.5e-3, ("350m", "post-ln"): 5e-4,
                       ("1.3b", "post-ln"): 3e-4, ("1.3b", "deepnorm"): 3e-4}

# Table 6 of the paper (350M schedule ablation): (schedule, total warmup steps W or None), our own copy.
TABLE6_ROWS = [
    ("none", None),
    ("linear", 1000), ("linear", 3000), ("linear", 6000), ("linear", 12000), ("linear", 24000),
    ("linear", 48000),
    ("linear-sqrt", 24000), ("linear-square", 24000),
    ("equal", 1000), ("equal", 12000), ("equal", 24000),
    ("reverse", 1000), ("reverse", 12000), ("reverse", 24000),
    ("stagewise-0", 24000), ("stagewise-L", 24000), ("stagewise-sqrt-l", 24000),
    ("fix-L", None), ("fix-sqrt-L", None), ("fix-sqrt-l", None),
]
# Official parameter counts (paper §2), for the params column.
PARAMS = {"130m": 134.1e6, "350m": 368.0e6, "1.3b": 1.364e9, "7b": 6.74e9}


@pytest.fixture(scope="module")
def main_grid():
    return load_grid(GRIDS / "paper" / "main.yaml")


def all_grid_files():
    return sorted(p for sub in ("paper", "cpu", "budget") for p in (GRIDS / sub).glob("*.yaml"))


# ---------------------------------------------------------------------------------------------------
# The paper's grids
# ---------------------------------------------------------------------------------------------------
def test_main_grid_is_the_papers_42_runs(main_grid):
    cells = main_grid.cells()
    assert len(cells) == 42
    assert main_grid.name == "paper-main"
    seen = set()
    for cell in cells:
        cfg = cell.config
        method, scale = cfg.method, cfg.model.scale
        seen.add((method, scale, cfg.prores.schedule))
        assert cfg.grid == "paper-main" and cfg.recipe == "paper"
        assert cfg.optim.lr == pytest.approx(PAPER_LR_EXCEPTIONS.get((scale, method), PAPER_LR[scale]))
        assert cfg.optim.warmup_steps == (10000 if method in ("post-ln", "deepnorm") else 2000)
        assert cfg.optim.lr_schedule == "wsd" and cfg.optim.decay_fraction == 0.1
        assert cfg.optim.betas == [0.9, 0.95] and cfg.optim.weight_decay == 0.1 and cfg.optim.grad_clip == 1.0
        assert (cfg.train.steps, cfg.train.global_batch, cfg.model.seq_len) == (100000, 512, 1024)
        assert cfg.train.precision == "bf16"
        assert cfg.train.global_batch % cfg.train.micro_batch == 0
        d = cfg.data
        assert (d.source, d.hf_path, d.hf_name, d.eval_split, d.packing) == ("hf", "allenai/c4", "en", "validation",
                                                                              "pack")
        assert "llama" in d.tokenizer.lower() and cfg.model.vocab_size == 32000
        assert cfg.eval.tokens == 10_000_000 and cfg.eval.lm_eval_tasks == ["paper"]
        if cfg.prores.schedule == "linear":
            # SIM300 takes the upper-case field names T, W (the paper's symbols) for constants: not a Yoda condition
            assert cfg.prores.T == 1000 and cfg.prores.W == 1000 * cfg.model.n_layers  # noqa: SIM300
            assert cell.axes["schedule"] == "linear-T1000"
        else:
            assert cfg.prores.schedule == "none" and cfg.prores.T is None
        assert cell.axes == {"method": method, "schedule": cell.axes["schedule"], "scale": scale}
    assert seen == {(m, s, p) for m in METHODS for s in PAPER_LR for p in ("none", "linear")}


def test_schedules_grid_is_table6(tmp_path):
    grid = load_grid(GRIDS / "paper" / "schedules.yaml")
    cells = grid.cells()
    assert len(cells) == len(TABLE6_ROWS) * 3 + 2 == 65
    rows: dict[str, list] = {}
    for cell in cells:
        cfg = cell.config
        assert cfg.model.scale == "350m" and cfg.model.n_layers == 24
        assert cfg.train.steps == 60000
        tokens = cfg.train.steps * cfg.train.global_batch * cfg.model.seq_len
        assert 5.8e9 <= tokens <= 6.2e9  # "6B tokens"
        assert cfg.optim.lr == pytest.approx(5e-4 if cfg.method == "post-ln" else 1e-3)
        assert cfg.optim.warmup_steps == (6000 if cfg.method in ("post-ln", "deepnorm") else 2000)
        W = None if cfg.prores.W is None else round(cfg.prores.W)
        if cfg.prores.schedule == "equal":
            assert cfg.prores.T == cfg.prores.W
        rows.setdefault(cfg.method, []).append((cfg.prores.schedule, W))
    for method in ("pre-ln", "post-ln", "sandwich-ln"):
        assert sorted(rows[method], key=str) == sorted(TABLE6_ROWS, key=str)
    assert rows["deepnorm"] == [("none", None)] and rows["lns"] == [("none", None)]
    assert len(grid.cells(["schedule=reverse"])) == 9
    assert len(grid.cells(["schedule=linear", "method=pre-ln"])) == 6


def test_depth_grid_T_per_depth():
    grid = load_grid(GRIDS / "paper" / "depth.yaml")
    cells = grid.cells()
    assert len(cells) == 11 * 6
    depths = {c.config.model.n_layers for c in cells}
    assert depths == {12, 24, 48, 72, 96, 120}
    deepnorm_lrs: dict[int, set] = {}
    for cell in cells:
        cfg = cell.config
        assert cfg.model.d_model == 512 and cfg.model.ffn_hidden == 1368
        L, sched = cfg.model.n_layers, cfg.prores.schedule
        if sched == "linear":
            assert cfg.method == "pre-ln"
            assert cfg.prores.T == (1000 if L <= 72 else 500)  # noqa: SIM300 -- T is a field, not a constant
            assert cfg.prores.W == cfg.prores.T * L
        elif sched == "equal":
            assert cfg.method == "pre-ln" and cfg.prores.T == 12000 and cfg.prores.W == 12000
        else:
            assert sched == "none"
        if cfg.method == "deepnorm":
            deepnorm_lrs.setdefault(L, set()).add(cfg.optim.lr)
            assert cfg.optim.warmup_steps == 10000
        else:
            assert cfg.optim.lr == pytest.approx(2e-3) and cfg.optim.warmup_steps == 2000
    assert all(v == {5e-4, 1e-3, 1.5e-3, 2e-3} for v in deepnorm_lrs.values()) and len(deepnorm_lrs) == 6
    methods = {(c.config.method, c.config.prores.schedule) for c in cells}
    assert methods == {(m, "none") for m in METHODS if m != "post-ln"} | {("pre-ln", "linear"), ("pre-ln", "equal")}


def test_7b_and_climbmix_grids():
    big = load_grid(GRIDS / "paper" / "7b.yaml").cells()
    assert len(big) == 2
    for cell in big:
        cfg = cell.config
        assert cfg.model.scale == "7b" and cfg.method == "pre-ln" and cfg.optim.lr == pytest.approx(3e-4)
        assert cfg.train.parallelism == "fsdp" and cfg.train.activation_checkpointing
    assert sorted((c.config.prores.schedule, c.config.prores.W) for c in big) == [("linear", 32000), ("none", None)]

    climb = load_grid(GRIDS / "paper" / "climbmix.yaml").cells()
    assert len(climb) == 6
    assert {(c.config.model.scale, c.config.prores.schedule) for c in climb} == {
        (s, p) for s in ("130m", "350m", "1.3b") for p in ("none", "linear")}
    assert all(c.config.method == "pre-ln" and "climbmix" in c.config.data.hf_path.lower() for c in climb)
    assert all(c.config.optim.lr == pytest.approx(PAPER_LR[c.config.model.scale]) for c in climb)


@pytest.mark.parametrize("path", all_grid_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_grid_validates(path, capsys):
    assert main(["grid", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK, ") and out.strip().endswith("cells")
    grid = load_grid(path)
    names = [c.run_name for c in grid.cells()]
    assert len(set(names)) == len(names)
    assert len({c.run_id for c in grid.cells()}) == len(names)
    assert all(c.config.grid == grid.name and c.run_dir("R") == Path("R") / grid.name / c.run_name
               for c in grid.cells())
    # One task per GPU: the global batch splits into whole micro-batches on the grid's default allocation.
    world = max(1, grid.cluster.get("gpus_per_node") or 0) * (grid.cluster.get("nodes") or 1)
    assert all(c.config.train.global_batch % (c.config.train.micro_batch * world) == 0 for c in grid.cells())


def test_cpu_grids():
    quick = load_grid(GRIDS / "cpu" / "quickstart.yaml").cells()
    assert len(quick) == 4
    for cell in quick:
        cfg = cell.config
        assert cfg.recipe == "cpu" and cfg.model.scale == "tiny" and cfg.data.source == "default"
        assert cfg.train.steps <= 300 and (cfg.train.micro_batch, cfg.train.global_batch) == (8, 16)
        assert cfg.eval.every == 50 and cfg.eval.tokens <= 50_000 and cfg.train.probe_every == 25
    assert len(load_grid(GRIDS / "cpu" / "norms.yaml").cells()) == 14
    depth = load_grid(GRIDS / "cpu" / "depth.yaml").cells()
    assert {c.config.model.n_layers for c in depth} == {4, 8, 12}
    assert {c.config.model.d_model for c in depth} == {64}


def test_profile_example_is_plain_data():
    import yaml

    data = yaml.safe_load((GRIDS / "profiles" / "example-slurm.yaml").read_text())
    for key in ("partition", "account", "qos", "time", "gpus_per_node", "nodes", "array_parallelism", "mem_gb",
                "constraint"):
        assert key in data


# ---------------------------------------------------------------------------------------------------
# Names, ids, filtering, estimates
# ---------------------------------------------------------------------------------------------------
def test_run_names_stable_across_loads(main_grid):
    again = load_grid(GRIDS / "paper" / "main.yaml")
    assert [(c.run_id, c.run_name) for c in main_grid.cells()] == [(c.run_id, c.run_name) for c in again.cells()]
    cell = main_grid.cells(["method=post-ln", "schedule=linear-T1000", "scale=1.3b"])[0]
    assert cell.run_name == f"post-ln_linear-T1000_1.3b-{cell.run_id[:8]}"
    assert cell.run_id == C.run_id(cell.config) and len(cell.run_id) == 12
    assert run_name(cell.config, cell.axes) == cell.run_name
    # The same config loaded from its dump has the same id (what a resumed run relies on).
    assert C.run_id(C.resolve(C.to_dict(cell.config))) == cell.run_id


def test_run_name_without_grid():
    cfg = C.resolve({"method": "pre-ln", "model": {"scale": "tiny"}, "prores": {"schedule": "linear", "T": 10}})
    name = run_name(cfg)
    assert name.startswith("pre-ln_linear") and "tiny" in name and name.endswith(C.run_id(cfg)[:8])
    cfg2 = C.resolve({"model": {"norm": "post", "n_layers": 6}})
    assert run_name(cfg2).startswith("post_none_L6")


def test_where_filtering(main_grid):
    assert len(main_grid.cells(["method=post-ln"])) == 6
    assert len(main_grid.cells(["scale=350m", "schedule=linear"])) == 7  # config value prores.schedule
    assert len(main_grid.cells(["schedule=linear-T1000"])) == 21  # axis label
    assert len(main_grid.cells(["method=pre-ln,post-ln", "scale=130m"])) == 4
    # resolved config keys, compared as numbers: 130m Post-LN and 350m all but Post-LN, each ± ProRes
    lr = main_grid.cells(["optim.lr=1e-3"])
    assert len(lr) == 14 and lr == main_grid.cells(["optim.lr=0.001"])
    assert {(c.config.method, c.config.model.scale) for c in lr} == (
        {("post-ln", "130m")} | {(m, "350m") for m in METHODS if m != "post-ln"})
    assert len(main_grid.cells(["model.n_layers=24"])) == 28
    with pytest.raises(ConfigError, match="valid keys"):
        main_grid.cells(["nonsense=1"])
    with pytest.raises(ConfigError, match="pre-lm"):
        main_grid.cells(["method=pre-lm"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        main_grid.cells(["method"])
    only = main_grid.select(only=[main_grid.cells()[3].run_id[:6], main_grid.cells()[5].run_name])
    assert [c.index for c in only] == [3, 5]


def test_estimate(main_grid):
    cell = main_grid.cells(["method=pre-ln", "schedule=none", "scale=130m"])[0]
    est = estimate(cell)
    assert est["tokens"] == 100000 * 512 * 1024
    assert est["mfu"] == 0.40 and est["peak_flops"] == 989e12
    if not HAVE_MODEL:
        pytest.skip("study.model not importable yet: params / GPU-hours not checked")
    assert est["params"] == pytest.approx(PARAMS["130m"], rel=0.01)
    assert est["gpu_hours"] == pytest.approx(est["tokens"] * est["flops_per_token"] / (0.4 * 989e12) / 3600)
    half = estimate(cell, mfu=0.2)
    assert half["gpu_hours"] == pytest.approx(2 * est["gpu_hours"])


# ---------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------
def test_grid_show_json(capsys):
    assert main(["grid", "show", str(GRIDS / "paper" / "main.yaml"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 42
    for row in rows:
        for key in ("run_id", "run_name", "axes", "params", "tokens", "gpu_hours", "config"):
            assert key in row
        assert row["config"]["grid"] == "paper-main"
        assert C.run_id(C.resolve(row["config"])) == row["run_id"]
        if HAVE_MODEL:
            assert row["params"] == pytest.approx(PARAMS[row["axes"]["scale"]], rel=0.01)
    assert main(["grid", "show", str(GRIDS / "paper" / "main.yaml"), "--json", "--where", "scale=1.3b",
                 "method=deepnorm"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["config"]["optim"]["lr"] for r in rows] == [3e-4, 3e-4]


def test_grid_show_table(capsys):
    assert main(["grid", "show", str(GRIDS / "paper" / "7b.yaml"), "--mfu", "0.5", "--peak-tflops", "1000"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.strip().splitlines() if not line.startswith("#")]
    assert "run name" in lines[0] and "GPU-h" in lines[0]
    assert len(lines) == 1 + 2 + 1
    assert lines[-1].startswith("total: 2 cells") and "MFU 0.50" in lines[-1] and "1000 TFLOP/s" in lines[-1]


BAD_GRIDS = [  # file, a key (or phrase) its message must name
    ("unknown_top_key.yaml", "'axis'"),
    ("unknown_axis_key.yaml", "axes.methd"),
    ("unknown_axis_value.yaml", "pre-lm"),
    ("empty_axis.yaml", "axes.scale"),
    ("contradictory_rule.yaml", "rules[0].set.prores.schedule"),
    ("conflicting_rules.yaml", "rules[1].set.optim.lr"),
    ("duplicate_cells.yaml", "duplicate cells"),
    ("bad_yaml.yaml", "line 2"),
    ("wrong_type.yaml", "train.steps"),
    ("exclude_unknown_axis.yaml", "exclude[0].scale"),
    ("rule_unknown_axis.yaml", "rules[0].when.series"),
    ("missing_base_file.yaml", "base_file"),
    ("negative_T.yaml", "prores.T"),
    ("label_missing.yaml", "axes.schedule[1].label"),
    ("rule_unknown_value.yaml", "rules[0].when.method"),
    ("rule_unknown_set_key.yaml", "optim.learning_rate"),
    ("rule_set_key_twice.yaml", "rules[0].set.train.seed"),
    ("unknown_schedule.yaml", "prores.schedule"),
    ("base_unknown_key.yaml", "model.layers"),
    ("bad_name.yaml", "'name'"),
    ("axes_not_mapping.yaml", "'axes'"),
    ("duplicate_label.yaml", "axes.schedule[1]"),
]


def test_every_bad_fixture_is_listed():
    assert {f for f, _ in BAD_GRIDS} == {p.name for p in BAD.glob("*.yaml")}
    assert len(BAD_GRIDS) >= 10


@pytest.mark.parametrize("name,key", BAD_GRIDS, ids=[f for f, _ in BAD_GRIDS])
def test_bad_grid_exits_2(name, key, capsys):
    path = BAD / name
    assert main(["grid", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("study: error: ") and str(path) in err and key in err, err


def test_bad_axis_value_lists_choices(capsys):
    assert main(["grid", "validate", str(BAD / "unknown_axis_value.yaml")]) == 2
    err = capsys.readouterr().err
    assert "axis 'method'" in err and "valid choices" in err and "pre-ln-ds-init" in err


def test_bad_grid_runs_nothing(tmp_path, monkeypatch, capsys):
    calls = _fake_train(monkeypatch, tmp_path)
    assert main(["run", str(BAD / "contradictory_rule.yaml"), "--out", str(tmp_path)]) == 2
    assert calls == [] and not any(tmp_path.iterdir())


def _fake_train(monkeypatch, root):
    """Replace study.train with a fake that records calls and writes a completed status."""
    calls = []

    def train_run(cfg, root_, *, axes=None, argv=None):
        from study.results import RunDir

        rd = RunDir.for_config(cfg, root_, axes)
        rd.write_status("completed", cfg.train.steps)
        calls.append((cfg, Path(root_), axes, argv))
        return types.SimpleNamespace(state="completed", run_dir=rd.path, step=cfg.train.steps)

    monkeypatch.setitem(sys.modules, "study.train", types.SimpleNamespace(train_run=train_run))
    return calls


def test_run_dry_run_lists_without_training(tmp_path, monkeypatch, capsys):
    calls = _fake_train(monkeypatch, tmp_path)
    grid = load_grid(GRIDS / "cpu" / "quickstart.yaml")
    assert main(["run", str(grid.path), "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert calls == []
    for cell in grid.cells():
        assert cell.run_name in out
    assert out.count("would run") == 5  # 4 cells + the summary
    assert not (tmp_path / grid.name).exists()


def test_run_trains_selected_cells_and_skips_finished(tmp_path, monkeypatch, capsys):
    calls = _fake_train(monkeypatch, tmp_path)
    grid = load_grid(GRIDS / "cpu" / "quickstart.yaml")
    cells = grid.cells()
    done = cells[0].run_dir(tmp_path)
    done.mkdir(parents=True)
    (done / "status.json").write_text(json.dumps({"state": "completed", "step": 200}))
    diverged = cells[1].run_dir(tmp_path)
    diverged.mkdir(parents=True)
    (diverged / "status.json").write_text(json.dumps({"state": "diverged", "step": 80}))

    assert main(["run", str(grid.path), "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err  # per-cell lines are log lines (stderr); the summary is the result (stdout)
    assert "skip (completed)" in out and "skip (diverged)" in out
    assert [axes for _, _, axes, _ in calls] == [cells[2].axes, cells[3].axes]
    assert all(root == tmp_path and argv is not None for _, root, _, argv in calls)
    assert [C.run_id(cfg) for cfg, *_ in calls] == [cells[2].run_id, cells[3].run_id]
    assert "2 completed" in out

    # Second pass: everything is finished, nothing runs again.
    calls.clear()
    assert main(["run", str(grid.path), "--out", str(tmp_path)]) == 0
    assert calls == []

    # --only and --where select.
    for cell in cells:
        (cell.run_dir(tmp_path) / "status.json").unlink()
    assert main(["run", str(grid.path), "--out", str(tmp_path), "--only", cells[3].run_name]) == 0
    assert main(["run", str(grid.path), "--out", str(tmp_path), "--where", "schedule=linear-W36"]) == 0
    assert [C.run_id(cfg) for cfg, *_ in calls] == [cells[3].run_id, cells[2].run_id]
    capsys.readouterr()
    assert main(["run", str(grid.path), "--out", str(tmp_path), "--only", "nosuchcell"]) == 2
    assert "nosuchcell" in capsys.readouterr().err


def test_grid_features(tmp_path):
    """base_file, eval / lm_eval defaults, cluster, {not: ...} excludes, rules keyed on preset-derived keys."""
    (tmp_path / "base.yaml").write_text("recipe: cpu\ntrain: {steps: 50, global_batch: 8}\neval: {every: 7}\n")
    (tmp_path / "g.yaml").write_text("""
description: features
base_file: base.yaml
base: {train: {micro_batch: 4}, eval: {tokens: 1000}}
eval: {every: 25, tokens: 5000, batch_size: 2}
lm_eval: {tasks: [piqa], limit: 10}
cluster: {gpus_per_node: 0, time: 5}
axes:
  method: [pre-ln, post-ln, deepnorm]
  scale: [tiny, tiny-12l]
rules:
  - when: {model.n_layers: 12}          # from the scale preset, not set anywhere in the file
    set: {optim.lr: 5.0e-4}
  - when: {method: {not: [pre-ln, post-ln]}}
    set: {train.seed: 3}
exclude:
  - {method: deepnorm, scale: {not: tiny}}
""")
    grid = load_grid(tmp_path / "g.yaml")
    assert grid.name == "g" and grid.description == "features" and grid.cluster == {"gpus_per_node": 0, "time": 5}
    cells = grid.cells()
    assert [c.axes for c in cells] == [{"method": m, "scale": s} for m in ("pre-ln", "post-ln")
                                       for s in ("tiny", "tiny-12l")] + [{"method": "deepnorm", "scale": "tiny"}]
    for cell in cells:
        cfg = cell.config
        assert (cfg.train.steps, cfg.train.global_batch, cfg.train.micro_batch) == (50, 8, 4)
        # the grid's eval over the base file's (every 7), under the grid's own base.eval (tokens 1000)
        assert (cfg.eval.every, cfg.eval.tokens, cfg.eval.batch_size) == (25, 1000, 2)
        assert cfg.eval.lm_eval_tasks == ["piqa"] and cfg.eval.lm_eval_limit == 10
        assert (cfg.optim.lr == 5e-4) == (cfg.model.n_layers == 12)
        assert cfg.train.seed == (3 if cfg.method == "deepnorm" else 0)
    assert len(grid.cells(["model.n_layers=12"])) == 2
    assert len(grid.cells(["scale=tiny", "method=post-ln,deepnorm"])) == 2


def test_grid_by_name(monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_grid("cpu/quickstart").name == "cpu-quickstart"
    with pytest.raises(ConfigError, match="not found"):
        load_grid("cpu/no-such-grid")


def test_grid_show_flags_cells_that_do_not_fit_in_gpu_memory(capsys):
    """7B with FSDP fits on 4 nodes × 8 GPUs of 80 GiB (the grid's cluster default) but not on one GPU."""
    assert main(["grid", "show", str(REPO / "grids/paper/7b.yaml"), "--json", "--gpus", "1"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert all(r["fits"] is False and r["memory_per_gpu"] > 80 * 2**30 for r in one)
    assert main(["grid", "show", str(REPO / "grids/paper/7b.yaml"), "--json"]) == 0
    eight = json.loads(capsys.readouterr().out)
    assert all(r["fits"] is True and r["gpus"] == 32 for r in eight)
    assert main(["grid", "show", str(REPO / "grids/paper/7b.yaml"), "--gpus", "1"]) == 0
    out = capsys.readouterr().out
    assert "!" in out and "WARNING: 2 cells need more than 80 GiB per GPU on 1 GPU(s)" in out


def test_grids_and_profiles_are_found_alike_and_a_miss_is_one_error(monkeypatch, tmp_path):
    from study.clusters.options import find_profile
    from study.grid import find_grid

    monkeypatch.chdir(tmp_path)  # found under the repository, from anywhere
    assert find_grid("cpu/quickstart") == REPO / "grids/cpu/quickstart.yaml"
    assert find_profile("example-slurm") == REPO / "grids/profiles/example-slurm.yaml"
    for find, what, folder in ((find_grid, "grid", "grids/"), (find_profile, "profile", "grids/profiles/")):
        with pytest.raises(ConfigError) as exc:
            find("no-such-thing")
        assert str(exc.value) == f"no-such-thing: {what} file not found (looked as given and under {folder})"
