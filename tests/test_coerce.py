"""study.coerce: one coercer, the same conversions and messages for run configs and cluster options."""

from __future__ import annotations

from typing import Any

import pytest

from study import config, dispatch
from study.coerce import coerce
from study.errors import ConfigError


def test_one_coercer_for_config_and_cluster_options():
    # the same conversions, the same messages, from both readers
    assert coerce(30, float, "k", None) == 30.0 and isinstance(coerce(30, float, "k", None), float)
    assert coerce(4.0, int, "k", None) == 4 and coerce("1e-3", float, "k", None) == 0.001
    assert coerce(("a", 1), list[Any], "k", None) == ["a", 1]
    with pytest.raises(ConfigError, match="expected int, got True"):
        coerce(True, int, "k", "f.yaml")
    opts = dispatch.check_options({"time": 30.0, "mem_gb": "64", "partition": 7, "setup": "module load x"},
                                  source="p.yaml")
    assert opts == {"time": 30, "mem_gb": 64.0, "partition": "7", "setup": ["module load x"]}
    with pytest.raises(ConfigError, match=r"p.yaml.*nodes.*expected int, got 'two'"):
        dispatch.check_options({"nodes": "two"}, source="p.yaml")
    with pytest.raises(ConfigError, match="expected int, got 'two'"):
        config.resolve({"train": {"steps": "two"}})
    # a run config does not turn numbers into names; cluster options do (a partition called 7)
    with pytest.raises(ConfigError, match="expected str or NoneType, got 7"):
        config.resolve({"name": 7})
