"""One layering of presets (study.config.layered) for `study train` and for grids: every cell of every grid in
grids/ resolves to the same config in `study grid show` as its run config does in `study train --print-config`,
and a rule's `when` reads the values resolution uses (official spellings mapped, the recipe's warmup only where
the config gives none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from study import config as C
from study.cli import main
from study.grid import load_grid
from study.grid.expand import _view
from study.grid.keys import values_equal

GRIDS = Path(__file__).resolve().parent.parent / "grids"
GRID_FILES = sorted(p for p in GRIDS.rglob("*.yaml") if p.parent.name not in ("base", "profiles"))
DERIVED = {"prores.T", "prores.W", "optim.warmup_steps"}  # computed by validation from other keys


def _leaves(data: dict, prefix: str = ""):
    for k, v in data.items():
        if k in C.SECTIONS and not prefix:
            yield from _leaves(v, f"{k}.")
        else:
            yield f"{prefix}{k}", v


def test_every_grid_folder_is_covered():
    assert {p.parent.name for p in GRID_FILES} == {"paper", "cpu", "budget"}
    assert len(GRID_FILES) >= 12


@pytest.mark.parametrize("path", GRID_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_grid_show_and_train_print_config_agree_on_every_cell(path, tmp_path, capsys):
    assert main(["grid", "show", str(path), "--json"]) == 0
    shown = {row["run_id"]: row["config"] for row in json.loads(capsys.readouterr().out)}
    grid = load_grid(path)
    assert len(shown) == len(grid.all_cells) > 0
    for cell in grid.all_cells:
        file = tmp_path / f"{cell.run_id}.yaml"
        file.write_text(yaml.safe_dump(cell.raw))
        assert main(["train", str(file), "--print-config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed == shown[cell.run_id], cell.describe()
        layered = C.layered(cell.raw)
        for key, value in _leaves(printed):
            if key not in DERIVED:
                assert values_equal(_view(layered, key), value), (cell.describe(), key, _view(layered, key), value)


def _grid(tmp_path, text: str):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return load_grid(path)


def test_rule_conditions_see_official_spellings_and_the_explicit_warmup(tmp_path):
    grid = _grid(tmp_path, """
base: {recipe: paper, model: {scale: tiny}, train: {steps: 100}}
axes:
  variant:
    - {label: deeppost, model.norm: deeppost, model.init: deepnorm}
    - {label: trunc, model.init: trunc-normal}
    - {label: postln-w5, method: post-ln, optim.warmup_steps: 5}
    - {label: postln, method: post-ln}
rules:
  - when: {model.norm: deepnorm}
    set: {train.seed: 1}
  - when: {model.init: normal}
    set: {optim.weight_decay: 0.05}
  - when: {optim.warmup_fraction: 0.1}
    set: {optim.grad_clip: 0.5}
""")
    got = {c.axes["variant"]: (c.config.train.seed, c.config.optim.weight_decay, c.config.optim.grad_clip)
           for c in grid.all_cells}
    assert got == {"deeppost": (1, 0.1, 1.0), "trunc": (0, 0.05, 1.0), "postln-w5": (0, 0.05, 1.0),
                   "postln": (0, 0.05, 0.5)}
    by_label = {c.axes["variant"]: c.config for c in grid.all_cells}
    assert by_label["postln-w5"].optim.warmup_steps == 5 and by_label["postln-w5"].optim.warmup_fraction is None
    assert by_label["postln"].optim.warmup_fraction == 0.1 and by_label["postln"].optim.warmup_steps == 10


def test_a_recipe_is_one_nested_partial_config():
    from study import presets

    assert not hasattr(presets, "RECIPE_MODEL")
    paper = presets.RECIPES["paper"]("post-ln", "130m")
    assert paper == {"model": {"init_truncation": 3.0},
                     "optim": {"decay_groups": "official", "lr": 1e-3, "warmup_fraction": 0.1}}
    assert set(presets.RECIPES["cpu"]("pre-ln", "tiny")) == {"optim"}
    layered = C.layered({"recipe": "paper", "method": "pre-ln", "model": {"scale": "130m", "init_truncation": 2.0}})
    assert layered["model"]["init_truncation"] == 2.0 and layered["model"]["norm"] == "pre"
    assert layered["optim"] == {"decay_groups": "official", "lr": 2e-3, "warmup_steps": 2000}


def test_a_bad_name_in_a_cell_is_blamed_on_its_axis_before_any_rule_reads_it(tmp_path):
    from study.errors import ConfigError

    with pytest.raises(ConfigError, match=r"axis 'method' value 'nope': unknown method 'nope'"):
        _grid(tmp_path, """
base: {model: {scale: tiny}}
axes: {method: [pre-ln, nope]}
rules:
  - when: {model.norm: pre}
    set: {train.seed: 1}
""")
