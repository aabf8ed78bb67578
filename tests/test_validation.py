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


# ---------------------------------------------------------------------------------------------------
# Issue 20: the edges a demanding user found, each one line, blamed on what caused it
# ---------------------------------------------------------------------------------------------------
LAUGHS = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize("content, says", [
    ('a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n' + LAUGHS + "model: {scale: tiny}\n"
     "eval: {lm_eval_tasks: *i}\n", "aliases expand to 926,177,121 values, more than the 100,000"),  # 9^9 strings
    ("model: &m {scale: tiny, extra: *m}\n", "alias refers to a node that contains it"),
    ("model: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
])
def test_yaml_bombs_are_refused_in_one_line_at_once(content, says, tmp_path, capsys):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(content)
    start = time.perf_counter()
    assert main(["train", str(path), "--print-config"]) == 2
    assert time.perf_counter() - start < 10  # unbounded, the first took minutes and gigabytes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and str(path) in err


def test_an_anchored_config_yaml_in_a_results_root_is_a_collect_problem(tmp_path):
    from study.collect.files import read_yaml

    path = tmp_path / "config.yaml"
    path.write_text('a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n' + LAUGHS)
    data, problem = read_yaml(path)
    assert data is None and "aliases expand to" in problem
    path.write_text("model: &m {scale: tiny}\nother: *m\n")  # small aliases stay readable
    assert read_yaml(path) == ({"model": {"scale": "tiny"}, "other": {"scale": "tiny"}}, None)


@pytest.mark.parametrize("overrides, culprit, key", [
    (["model.d_model=100"], "model.d_model=100", "model.n_heads"),  # the file's 4 heads no longer divide it
    (["train.steps=7", "train.micro_batch=3"], "train.micro_batch=3", "train.global_batch"),
    (["model.seq_len=1"], "model.seq_len=1", "model.seq_len"),
])
def test_a_cross_field_error_a_set_caused_is_blamed_on_that_set(overrides, culprit, key, tmp_path):
    good = tmp_path / "ok.yaml"
    good.write_text("model: {scale: tiny, n_heads: 4}\n")
    with pytest.raises(ConfigError) as err:
        config.load(good, overrides)
    assert str(err.value).startswith(f"--set {culprit}, key '{key}': ") and "ok.yaml" not in str(err.value)


def test_an_error_of_the_file_stays_on_the_file_whatever_the_sets(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {scale: tiny, n_heads: 3}\n")  # 64 / 3: the file's own error
    with pytest.raises(ConfigError) as err:
        config.load(bad, ["train.steps=5"])
    assert str(err.value).startswith(f"{bad}, key 'model.n_heads': ")


def _grid(tmp_path, name="g.yaml", **raw) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"name": "g", **raw}))
    return str(path)


def test_circular_base_files_name_every_file_of_the_circle(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base_file: b.yaml\nmodel: {scale: tiny}\n")
    (tmp_path / "b.yaml").write_text("base_file: a.yaml\n")
    (tmp_path / "self.yaml").write_text("name: s\nbase_file: self.yaml\naxes: {seed: [0]}\n")
    cases = {
        _grid(tmp_path, base_file="a.yaml", axes={"seed": [0]}): "circular base_file: {d}/g.yaml -> {d}/a.yaml -> "
                                                                  "{d}/b.yaml -> {d}/a.yaml",
        str(tmp_path / "self.yaml"): "circular base_file: {d}/self.yaml -> {d}/self.yaml",
    }
    for grid, says in cases.items():
        assert main(["grid", "validate", grid]) == 2
        err = capsys.readouterr().err
        assert says.format(d=tmp_path) in err and err.count("\n") == 1
    (tmp_path / "c.yaml").write_text("model: {scale: tiny}\n")
    (tmp_path / "chain.yaml").write_text("base_file: c.yaml\n")
    assert main(["grid", "validate", _grid(tmp_path, "chained.yaml", base_file="chain.yaml", axes={"seed": [0]})]) == 2
    assert f"{tmp_path}/chain.yaml names a base_file of its own (c.yaml)" in capsys.readouterr().err
    assert main(["grid", "validate", _grid(tmp_path, "h.yaml", base_file="g.yaml", axes={"seed": [0]})]) == 2
    d = tmp_path  # a grid as another grid's base: the circle it leads into is named, from the grid validated
    assert f"circular base_file: {d}/h.yaml -> {d}/g.yaml -> {d}/a.yaml -> {d}/b.yaml -> {d}/a.yaml" in \
        capsys.readouterr().err
    (tmp_path / "gridlike.yaml").write_text("axes: {seed: [0]}\nmodel: {scale: tiny}\n")
    assert main(["grid", "validate", _grid(tmp_path, base_file="gridlike.yaml", axes={"seed": [0]})]) == 2
    assert f"{tmp_path}/gridlike.yaml is a grid file (it has axes), not a run config" in capsys.readouterr().err


def test_an_axis_that_breaks_the_base_is_blamed_not_the_base(tmp_path):
    from study.grid import load_grid

    path = _grid(tmp_path, base={"model": {"scale": "tiny", "n_heads": 4}}, axes={"model.d_model": [64, 100]})
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert "axis 'model.d_model' value '100': d_model=100 must split into 4 heads" in str(err.value)
    assert "base:" not in str(err.value)
    path = _grid(tmp_path, base={"model": {"scale": "tiny", "n_heads": 3}}, axes={"seed": [0]})
    with pytest.raises(ConfigError, match="base: d_model=64 must split into 3 heads"):  # the base's own error
        load_grid(path)


def test_a_grid_whose_excludes_remove_every_cell_is_refused(tmp_path, capsys):
    path = _grid(tmp_path, base={"model": {"scale": "tiny"}}, axes={"seed": [0, 1], "schedule": ["none"]},
                 exclude=[{"seed": [0, 1]}])
    assert main(["grid", "validate", path]) == 2
    err = capsys.readouterr().err
    assert "key 'exclude': the excludes remove every one of the grid's 2 cells" in err and "OK" not in err


def test_grid_validate_refuses_what_submit_and_run_would(tmp_path, cache_dir, capsys):
    base = {"model": {"scale": "tiny"}, "data": {"cache_dir": str(cache_dir)}}
    path = _grid(tmp_path, base=base, axes={"seed": [0]}, cluster={"gpus_per_node": 0, "partitionn": "gpu"})
    assert main(["grid", "validate", path]) == 2
    assert "key 'partitionn': unknown cluster option; valid keys: cluster, partition" in capsys.readouterr().err
    path = _grid(tmp_path, base=base, axes={"seed": [0]}, cluster={"gpus_per_node": 2, "tasks_per_node": 1})
    assert main(["grid", "validate", path]) == 2
    assert "tasks_per_node=1 but gpus_per_node=2" in capsys.readouterr().err
    files = {**base, "data": {**base["data"], "source": "files", "paths": [str(tmp_path / "gone" / "*.jsonl")]}}
    local = {**base, "data": {**base["data"], "source": "hf", "hf_path": "json",
                              "hf_data_files": {"train": [str(tmp_path / "nope.jsonl")]}}}
    for raw, says in ((files, "data.paths: no file matches"), (local, "data.hf_data_files.train: no file matches")):
        assert main(["grid", "validate", _grid(tmp_path, base=raw, axes={"seed": [0, 1]})]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cell (seed=seed0)" in err and says in err  # once per data config
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "a.jsonl").write_text('{"text": "hello there"}\n')
    store = {**files, "data": {**files["data"], "store": True, "store_dir": str(tmp_path / "store")}}
    assert main(["grid", "validate", _grid(tmp_path, base=store, axes={"seed": [0]})]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("OK, 1 cells") and "not prepared yet" in err  # a note: preparing comes next


@pytest.mark.parametrize("override, key, says", [
    ("model.seq_len=1", "model.seq_len", ">= 2"),
    ("train.console_every=-5", "train.console_every", ">= 0"),
    ("train.probe_len=200", "train.probe_len", "<= model.seq_len (128) to probe"),
    ("data.heldout_fraction=0", "data.heldout_fraction", "no held-out documents"),
])
def test_nonsense_values_are_refused_before_any_work(override, key, says, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {scale: tiny}\ntrain: {probe_every: 10}\n")
    assert main(["train", str(cfg), "--set", override, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"study: error: --set {override}, key '{key}': ") and says in err
    assert not (tmp_path / "r").exists()


def test_without_evaluation_a_zero_heldout_fraction_is_fine(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {scale: tiny}\ndata: {heldout_fraction: 0}\neval: {every: 0, at_end: false}\n")
    assert config.load(cfg).data.heldout_fraction == 0


def test_a_default_bpe_too_small_for_its_bytes_is_a_config_error(cache_dir):
    from study.config import DataConfig
    from study.data import build_tokenizer

    with pytest.raises(ConfigError, match=r"key 'model.vocab_size': the default byte-level BPE needs"):
        build_tokenizer(DataConfig(cache_dir=str(cache_dir)), 100)


def test_an_offline_tokenizer_name_fails_at_once_from_the_local_cache_alone(monkeypatch):
    import time

    import transformers

    from study.data import hf_tokenizer
    from study.errors import DataError

    asked = []

    def from_pretrained(name, **kwargs):  # what transformers does offline for a name it has not cached
        asked.append(kwargs)
        if not kwargs.get("local_files_only"):
            time.sleep(60)  # transformers' retries against an unreachable hub (49 s measured)
        raise OSError(f"{name} is not in the cache")

    monkeypatch.setattr(hf_tokenizer, "hub_reachable", lambda: False)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    start = time.perf_counter()
    with pytest.raises(DataError, match="the Hugging Face Hub cannot be reached and the local Hugging Face cache "
                                        "does not hold it"):
        hf_tokenizer.load_hf_tokenizer("some-org/some-tokenizer")
    assert time.perf_counter() - start < 5 and asked == [{"local_files_only": True}]
