"""Grid files -> cells: the product of a grid's axes, less its excludes, each cell a fully resolved RunConfig.

A grid file (YAML; docs/grids.md is the reference):

    name: paper-main              # results subfolder <root>/<name>/ (default: the file stem)
    description: ...
    base_file: base/paper.yaml    # optional run-config YAML, relative to this file, merged under `base`
    base: {recipe: paper, train: {steps: 100000}}           # a run config as study.config.resolve takes it
    axes:                         # axis -> values; the grid is their product, in this order
      method: [pre-ln, post-ln]   # shorthands: method, scale (model.scale), schedule (prores.schedule),
      seed: [0, 1, 2]             #   seed (train.seed; labelled seed0, seed1, ... in run names)
      schedule:                   # or a dotted config key; a value may set several keys at once, with a label
        - none
        - {label: linear-T1000, prores.schedule: linear, prores.T: 1000}
    rules:                        # values where axes meet, applied in order after the axes
      - when: {scale: [71m-96l, 71m-120l], schedule: linear}
        set: {prores.T: 500}
    exclude:                      # cells to leave out (values: a value, a list, or {not: value-or-list})
      - {method: post-ln, schedule: {not: none}}
    eval: {every: 1000}           # defaults for the run config's eval section
    lm_eval: [paper]              # or {tasks: [...], limit: N, batch_size: N, data_dir: DIR}
    cluster: {gpus_per_node: 8}   # defaults for `study submit`, kept as a plain dict

Errors are ConfigError (exit 2) naming the grid file, the key and the valid choices.

Modules: keys (settable config keys, shorthands, loose value matching), cells (Axis, Rule, Cell, Grid), parse
(reading and checking a grid file), expand (axes x rules -> resolved cells). Cost estimates are study.cost's;
a cell's status on disk is the run directory's (study.results.RunDir).
"""

from study.cost import DEFAULT_MFU, DEFAULT_PEAK_FLOPS, PEAK_NOTE, estimate
from study.grid.cells import Axis, AxisValue, Cell, Grid, Rule
from study.grid.keys import SHORTHANDS, Matcher
from study.grid.parse import TOP_KEYS, find_grid, load_grid
from study.results import run_name

__all__ = [
    "Grid", "Cell", "Axis", "AxisValue", "Rule", "Matcher", "load_grid", "find_grid", "run_name", "estimate",
    "SHORTHANDS", "TOP_KEYS", "DEFAULT_MFU", "DEFAULT_PEAK_FLOPS", "PEAK_NOTE",
]
