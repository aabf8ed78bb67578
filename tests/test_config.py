"""Config resolution: presets, recipe, T/W, round trips, run ids, and one-line errors with exit code 2."""

from __future__ import annotations

import pytest

from study import config, presets
from study.cli import main
from study.errors import ConfigError


def test_method_scale_recipe_resolve_to_paper_values():
    cfg = config.load(None, ["method=post-ln", "model.scale=130m", "recipe=paper", "train.steps=100000"])
    assert (cfg.model.norm, cfg.model.init, cfg.model.d_model, cfg.model.n_layers) == ("post", "normal", 768, 12)
    assert cfg.optim.lr == 1e-3 and cfg.optim.warmup_steps == 10000  # Post-LN: 10% LR warmup
    cfg = config.load(None, ["method=pre-ln", "model.scale=1.3b", "recipe=paper"])
    assert cfg.optim.lr == 6e-4 and cfg.optim.warmup_steps == 2000


def test_explicit_value_beats_recipe_and_scale():
    cfg = config.load(None, ["model.scale=130m", "model.n_layers=3", "recipe=paper", "optim.lr=0.1"])
    assert cfg.model.n_layers == 3 and cfg.model.d_model == 768 and cfg.optim.lr == 0.1


def test_method_contradicting_explicit_norm_is_an_error():
    with pytest.raises(ConfigError, match="method 'deepnorm' sets norm='deepnorm'"):
        config.load(None, ["method=deepnorm", "model.norm=pre"])


@pytest.mark.parametrize("schedule,layers,T,W", [("linear", 12, 1000, 12000), ("equal", 12, 12000, 12000),
                                                 ("reverse", 24, 500, 12000), ("stagewise-L", 24, 1000, 24000)])
def test_T_and_W_are_derived_from_each_other(schedule, layers, T, W):
    by_T = config.load(None, [f"prores.schedule={schedule}", f"model.n_layers={layers}", f"prores.T={T}"])
    by_W = config.load(None, [f"prores.schedule={schedule}", f"model.n_layers={layers}", f"prores.W={W}"])
    assert (by_T.prores.T, by_T.prores.W) == (T, W) == (by_W.prores.T, by_W.prores.W)


def test_official_spellings_are_aliases():
    assert config.load(None, ["prores.schedule=linear_square", "prores.T=10"]).prores.schedule == "linear-square"
    assert config.load(None, ["prores.schedule=sqrt", "prores.T=10"]).prores.schedule == "linear-sqrt"
    assert config.load(None, ["model.norm=deeppost"]).model.norm == "deepnorm"


def test_resolved_config_round_trips_and_run_id_is_stable(tmp_path):
    cfg = config.load(None, ["method=deepnorm", "model.scale=350m", "recipe=paper", "prores.schedule=linear",
                             "prores.T=1000"])
    path = tmp_path / "c.yaml"
    path.write_text(config.dump_yaml(cfg))
    again = config.load(path)
    assert again == cfg and config.run_id(again) == config.run_id(cfg)


def test_run_id_ignores_bookkeeping_but_not_semantics():
    base = config.load(None, [])
    assert config.run_id(config.load(None, ["train.log_every=1", "grid=x", "eval.every=7"])) == config.run_id(base)
    assert config.run_id(config.load(None, ["optim.lr=0.002"])) != config.run_id(base)
    assert config.run_id(config.load(None, ["prores.schedule=linear", "prores.T=5"])) != config.run_id(base)


def test_every_scale_preset_and_method_resolves():
    for scale in presets.SCALES:
        for method in presets.METHODS:
            config.load(None, [f"model.scale={scale}", f"method={method}", "recipe=paper"])


@pytest.mark.parametrize("override,needle", [
    ("optim.lrr=1", "key 'optim.lrr': unknown key; valid keys: lr,"),
    ("model.norm=pree", "unknown norm 'pree'; valid choices: deepnorm, lns, lns-gain, post, pre, sandwich"),
    ("model.init=xavier", "unknown init 'xavier'; valid choices:"),
    ("prores.schedule=cosine", "unknown schedule 'cosine'; valid choices: equal,"),
    ("model.scale=9b", "unknown scale '9b'; valid choices:"),
    ("method=pre-lm", "unknown method 'pre-lm'; valid choices:"),
    ("train.steps=abc", "key 'train.steps': expected int, got 'abc'"),
    ("train.compile=maybe", "key 'train.compile': expected bool"),
    ("train.micro_batch=3", "global_batch=512 is not a multiple of micro_batch=3"),
    ("model.n_heads=7", "must split into 7 heads"),
    ("optim.warmup_fraction=2", "must be in [0, 1]"),
])
def test_bad_overrides_exit_2_with_one_line(override, needle, capsys):
    assert main(["train", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_negative_and_missing_T(capsys):
    assert main(["train", "--set", "prores.schedule=linear", "--set", "prores.T=-1"]) == 2
    assert "key 'prores.T': must be > 0" in capsys.readouterr().err
    assert main(["train", "--set", "prores.schedule=linear"]) == 2
    assert "needs prores.T" in capsys.readouterr().err
    assert main(["train", "--set", "prores.schedule=fix-L", "--set", "prores.T=3"]) == 2
    assert "takes no T or W" in capsys.readouterr().err


def test_bad_yaml_file_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  norm: pre\n   init: normal\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line" in err
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  nrom: pre\n")
    assert main(["train", str(typo)]) == 2
    assert f"{typo}, key 'model.nrom': unknown key" in capsys.readouterr().err


def test_print_config_shows_every_default(capsys):
    assert main(["train", "--set", "method=lns", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "norm: lns" in out and "warmup_steps: 0" in out and "keep_checkpoints: 2" in out


# ---- choices: each a Literal, checked by the one coercer (moved from tests/test_config_choices.py, whose check
# that every Literal equals its `choice()` metadata went with the metadata) ----------------------------------
def _choice_fields(cls=config.RunConfig, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _choice_fields(tp, f"{prefix}{f.name}.")
            continue
        literal = [a for a in (tp, *typing.get_args(tp)) if typing.get_origin(a) is typing.Literal]
        if literal:
            yield f"{prefix}{f.name}", literal[0], f


def test_every_choice_is_a_literal_with_a_valid_default_and_tables_give_their_names():
    import dataclasses
    import typing

    from study import prores

    literal = {key: (tp, f) for key, tp, f in _choice_fields()}
    assert {"model.norm", "model.init", "optim.lr_schedule", "data.source", "train.precision", "train.parallelism",
            "model.scale", "method", "recipe", "prores.schedule"} <= set(literal)
    for key, (tp, f) in literal.items():
        if f.default is dataclasses.MISSING:  # a list of choices (train.trackers): each default entry a choice
            assert set(f.default_factory()) <= set(typing.get_args(tp)), key
        else:
            assert f.default is None or f.default in typing.get_args(tp), key
    assert typing.get_args(config.Norm) == config.NORMS and "lns-gain" in config.NORMS
    assert typing.get_args(literal["model.scale"][0]) == tuple(presets.SCALES)
    assert typing.get_args(literal["prores.schedule"][0]) == prores.SCHEDULES
    with pytest.raises(ConfigError, match=r"key 'prores.schedule': unknown schedule 'linaer'; valid choices: "):
        config.resolve({"prores": {"schedule": "linaer"}})
    with pytest.raises(ConfigError, match=r"key 'recipe': unknown recipe 'papr'; valid choices: cpu, paper$"):
        config.resolve({"recipe": "papr"})


def test_a_literal_is_checked_with_the_unknown_name_message():
    from study.coerce import coerce, type_name

    assert coerce("sandwich", config.Norm, "model.norm", None) == "sandwich"
    with pytest.raises(ConfigError) as exc:
        coerce("xyz", config.Norm, "model.norm", "f.yaml")
    assert str(exc.value) == ("f.yaml, key 'model.norm': unknown norm 'xyz'; valid choices: deepnorm, lns, lns-gain, "
                              "post, pre, sandwich")
    with pytest.raises(ConfigError, match=r"key 'model.embed_std_rule': unknown embed std rule 'x'; valid choices: "
                                          r"fixed, sqrt-d$"):
        coerce("x", config.EmbedStdRule, "model.embed_std_rule", None)
    with pytest.raises(ConfigError, match=r"key 'train.precision': expected str, got 16$"):
        coerce(16, config.Precision, "train.precision", None)
    assert type_name(config.Norm) == "str"


def test_resolving_a_config_gives_the_same_messages():
    with pytest.raises(ConfigError, match=r"unknown precision 'fp16'; valid choices: auto, bf16, bf16-pure, fp32"):
        config.resolve({"train": {"precision": "fp16"}})
    with pytest.raises(ConfigError, match=r"key 'model.norm': expected str, got 7"):
        config.resolve({"model": {"norm": 7}})
    assert config.resolve({"model": {"norm": "deeppost"}}).model.norm == "deepnorm"  # official spelling, mapped
