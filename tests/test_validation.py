"""Every value checked before any work: range and type, one message style naming the key and where it came from
(file, --set, grid axis), exit 2; unreadable or ambiguous YAML refused; models that cannot fit refused."""

from __future__ import annotations

import pytest
import yaml

from study import config
from study.cli import main
from study.errors import ConfigError


@pytest.mark.parametrize("override, key, says", [
    ("optim.grad_clip=-1", "optim.grad_clip", "> 0"),  # gradient ascent
    ("optim.grad_clip=0", "optim.grad_clip", "> 0"),  # no learning
    ("optim.weight_decay=-0.1", "optim.weight_decay", ">= 0"),
    ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio", "[0, 1]"),
    ("optim.eps=0", "optim.eps", "> 0"),
    ("eval.batch_size=0", "eval.batch_size", "> 0"),
    ("train.seed=-1", "train.seed", "[0, 2**32)"),
    ("train.seed=4294967296", "train.seed", "[0, 2**32)"),
    ("train.probe_len=0", "train.probe_len", "> 0"),
    ("model.norm_eps=0", "model.norm_eps", "> 0"),
    ("train.diverge_loss=-3", "train.diverge_loss", "> 0"),
    ("optim.grad_clip=abc", "optim.grad_clip", "expected float"),
])
def test_out_of_range_values_name_the_set_that_gave_them(override, key, says, tmp_path):
    good = tmp_path / "ok.yaml"
    good.write_text("model: {scale: tiny}\n")
    with pytest.raises(ConfigError) as err:
        config.load(good, [override])
    assert str(err.value).startswith(f"--set {override}, key '{key}': ") and says in str(err.value)
    assert "ok.yaml" not in str(err.value)  # the file is fine: never blamed


def test_bad_value_in_the_file_names_the_file_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {grad_clip: -1}\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"study: error: {bad}, key 'optim.grad_clip': must be > 0, got -1.0"
    assert not (tmp_path / "r").exists()


def test_bad_grid_axis_value_names_the_axis(tmp_path):
    from study.grid import load_grid

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": {"model": {"scale": "tiny"}},
                                    "axes": {"optim.grad_clip": [1.0, -1.0]}}))
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert "optim.grad_clip" in str(err.value) and "axis" in str(err.value) and "g.yaml" in str(err.value)


@pytest.mark.parametrize("content, says", [
    ("optim:\n  lr: 1e-3\n  lr: 3e-3\n", "key 'lr' given twice (lines 2 and 3)"),
    ("model: {scale: tiny}\nmodel: {scale: small}\n", "key 'model' given twice (lines 1 and 2)"),
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
])
def test_ambiguous_or_empty_yaml_is_refused(content, says, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"^{path}: .*{says.replace('(', '.').replace(')', '.')}"):
        config.load(path)


def test_binary_file_and_folder_as_config_are_one_line_exit_2(tmp_path, capsys):
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["train", str(binary)]) == 2
    assert "not a text file" in capsys.readouterr().err
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"model:\x00\x00\n")
    assert main(["train", str(nul)]) == 2
    assert "binary" in capsys.readouterr().err
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and err.count("\n") == 1


def test_a_model_that_cannot_fit_is_refused_before_allocating(tiny_cfg, tmp_path):
    from study.train import train_run

    cfg = tiny_cfg(**{"model.d_model": 1e9, "model.n_heads": 8})
    with pytest.raises(ConfigError, match=r"key 'model': the model \(d_model=1000000000.*\) needs about .* GiB"):
        train_run(cfg, tmp_path, handle_signals=False)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize("command", ["run", "submit"])
def test_out_naming_a_file_is_one_line_exit_2_for_grids(command, tmp_path, cache_dir, capsys):
    from tests.test_dispatch import grid_file

    grid = grid_file(tmp_path, cache_dir)
    out = tmp_path / "results.txt"
    out.write_text("my notes")
    extra = ["--cluster", "debug"] if command == "submit" else []
    assert main([command, str(grid), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err and out.read_text() == "my notes"
