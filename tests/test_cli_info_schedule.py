"""`study info` and `study schedule` through study.cli.main: JSON outputs, the plot, and one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from study import prores
from study.cli import main
from study.commands.schedule import plot


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)


# ---- info -------------------------------------------------------------------------------------------------
def test_info_json_preset(capsys):
    got = run_json(capsys, ["info", "130m", "--json"])
    assert set(got) == {"params", "non_embedding_params", "layers", "d_model", "flops_per_token", "seq_len",
                        "flops_formula", "memory", "checkpoint"}
    V, d, L, f, S = 32000, 768, 12, 2048, 1024
    params = 2 * V * d + L * (4 * d * d + 3 * d * f + 2 * d) + d
    assert got["params"] == params == 134_105_856
    assert got["non_embedding_params"] == params - 2 * V * d
    assert (got["layers"], got["d_model"], got["seq_len"]) == (L, d, S)
    assert got["flops_per_token"] == 6 * (params - V * d) + 12 * L * d * S
    assert "PaLM" in got["flops_formula"]
    m = got["memory"]
    parts = ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes")
    assert m["total_bytes"] == sum(m[k] for k in parts)
    assert (m["params_bytes"], m["grads_bytes"], m["optimizer_bytes"]) == (4 * params, 4 * params, 8 * params)


def test_info_memory_flags(capsys):
    base = run_json(capsys, ["info", "1.3b", "--json", "--micro-batch", "4"])["memory"]
    fsdp = run_json(capsys, ["info", "1.3b", "--json", "--micro-batch", "4", "--parallelism", "fsdp",
                             "--world-size", "8"])["memory"]
    ckpt = run_json(capsys, ["info", "1.3b", "--json", "--micro-batch", "4", "--activation-checkpointing"])["memory"]
    double = run_json(capsys, ["info", "1.3b", "--json", "--micro-batch", "8"])["memory"]
    pure = run_json(capsys, ["info", "1.3b", "--json", "--micro-batch", "4", "--precision", "bf16-pure"])["memory"]
    for k in ("params_bytes", "grads_bytes", "optimizer_bytes"):
        assert fsdp[k] == math.ceil(base[k] / 8)
        assert pure[k] == base[k] // 2
    assert fsdp["activations_bytes"] == base["activations_bytes"]  # activations are per device
    assert ckpt["activations_bytes"] < base["activations_bytes"] / 4
    assert double["activations_bytes"] == 2 * base["activations_bytes"]
    # the documented estimate: 34·S·B·d bytes per layer (bf16) + logits S·B·V·(2 + 4)
    S, B, d, L, V = 1024, 4, 2048, 24, 32000
    assert base["activations_bytes"] == 34 * S * B * d * L + S * B * V * 6


def test_info_from_config_file(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  scale: tiny\n  norm: sandwich\ntrain:\n  micro_batch: 2\n  global_batch: 4\n")
    got = run_json(capsys, ["info", str(path), "--json"])
    tiny = run_json(capsys, ["info", "tiny", "--json"])
    assert got["params"] == tiny["params"] + 2 * 64 * 4  # sandwich: two branch norms per layer
    assert got["memory"]["micro_batch"] == 2 and tiny["memory"]["micro_batch"] == 8


def test_info_table(capsys):
    assert main(["info", "71m"]) == 0
    out = capsys.readouterr().out
    assert "70,578,688" in out and "70.6M" in out and "PaLM" in out and "total" in out


# ---- schedule ---------------------------------------------------------------------------------------------
def test_schedule_json_matches_closed_form(capsys):
    rows = run_json(capsys, ["schedule", "linear", "--layers", "12", "--T", "1000",
                             "--steps", "0,500,1000,6000,12000,20000", "--json"])
    assert [r["step"] for r in rows] == [0, 500, 1000, 6000, 12000, 20000]
    for row in rows:
        want = [min(row["step"] / (1000 * l), 1.0) for l in range(1, 13)]
        assert row["alpha"] == pytest.approx(want, abs=1e-12)
        assert len(row["alpha"]) == 12


def test_schedule_json_with_W_and_alias(capsys):
    rows = run_json(capsys, ["schedule", "stagewise_sqrt_l", "--layers", "4", "--W", "400", "--steps", "0,150,400",
                             "--json"])
    T = 100
    for row in rows:
        t = row["step"]
        want = [1 / math.sqrt(l) + (1 - 1 / math.sqrt(l)) * min(max((t - T * (l - 1)) / T, 0), 1)
                for l in range(1, 5)]
        assert row["alpha"] == pytest.approx(want, abs=1e-12)
    equal = run_json(capsys, ["schedule", "equal", "--layers", "3", "--W", "200", "--steps", "100", "--json"])
    assert equal == [{"step": 100, "alpha": [0.5, 0.5, 0.5]}]  # equal: W = T


def test_schedule_text_and_default_steps(capsys):
    assert main(["schedule", "reverse", "--layers", "2", "--T", "10"]) == 0
    out = capsys.readouterr().out
    assert "T=10" in out and "W=20" in out
    assert "step 10: 0.5000 1.0000" in out  # reverse: the last layer warms first
    assert main(["schedule", "fix-L", "--layers", "4"]) == 0
    assert "0.2500 0.2500 0.2500 0.2500" in capsys.readouterr().out


def test_plot_draws_every_layer_with_the_schedule():
    fig = plot("linear-square", 6, 100)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 6
    W = 600
    for l, line in enumerate(lines, 1):
        t, a = line.get_xdata(), line.get_ydata()
        assert t[0] == 0 and t[-1] == pytest.approx(1.25 * W)
        np.testing.assert_allclose(a, np.minimum(t / (100 * l), 1.0) ** 2, atol=1e-12)
        assert 100 * l in t  # the kink at T·l is drawn exactly
    assert lines[0].get_color() != lines[-1].get_color()  # coloured by depth
    assert "linear-square" in ax.get_title() and "L=6" in ax.get_title() and "W=600" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    fixed = plot("fix-sqrt-l", 3, None)
    for l, line in enumerate(fixed.axes[0].get_lines(), 1):
        np.testing.assert_allclose(line.get_ydata(), 1 / math.sqrt(l))


def test_plot_file(tmp_path, capsys):
    path = tmp_path / "sched.png"
    assert main(["schedule", "linear", "--layers", "12", "--T", "1000", "--plot", str(path)]) == 0
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "plot written" in capsys.readouterr().out


# ---- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["schedule", "lineaer", "--layers", "4", "--T", "10"], "valid choices: equal, fix-L"),
    (["schedule", "linear", "--layers", "4", "--T", "-5"], "must be > 0"),
    (["schedule", "linear", "--layers", "4", "--T=-5"], "must be > 0"),
    (["schedule", "linear", "--layers", "4", "--W", "0"], "must be > 0"),
    (["schedule", "linear", "--layers", "4"], "needs --T"),
    (["schedule", "linear", "--layers", "0", "--T", "3"], "--layers"),
    (["schedule", "linear", "--layers", "4", "--T", "3", "--steps", "1,x"], "comma-separated"),
    (["info", "13b"], "valid choices: 71m"),
    (["info", "/nonexistent/run.yaml"], "file not found"),
])
def test_errors_exit_2_with_one_line(capsys, argv, needle):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("study: error: ") and "\n" not in err
    assert needle in err
    assert "Traceback" not in captured.err and captured.out == ""


def test_every_schedule_lists_in_the_error(capsys):
    main(["schedule", "nope", "--layers", "2", "--T", "1"])
    err = capsys.readouterr().err
    assert all(name in err for name in prores.SCHEDULES)
