"""The config's fixed choices are Literal types, checked by the one coercer with the messages names always had."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from study import config
from study.coerce import coerce, type_name
from study.errors import ConfigError


def _choice_fields(cls=config.RunConfig, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _choice_fields(tp, f"{prefix}{f.name}.")
        elif "choices" in f.metadata:
            yield f"{prefix}{f.name}", tp, f


def test_every_literal_field_lists_the_same_names_as_its_choices():
    literal = {key: (tp, f) for key, tp, f in _choice_fields() if typing.get_origin(tp) is typing.Literal}
    assert {"model.norm", "model.init", "optim.lr_schedule", "data.source", "train.precision",
            "train.parallelism"} <= set(literal)
    for key, (tp, f) in literal.items():
        assert typing.get_args(tp) == f.metadata["choices"], key
        assert f.default in typing.get_args(tp), key
    assert typing.get_args(config.Norm) == config.NORMS and "lns-gain" in config.NORMS


def test_a_literal_is_checked_with_the_unknown_name_message():
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
