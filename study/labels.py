"""The paper's names for what a run is, and the text label of a config value.

Used below the presentation layer: study.collect stores `method_label` and `label` (the series label) as columns
of the runs table, and study.grid names axis values with `value_label`. Display-only spellings (the paper's scale
names) live with the figures, in paper_figures/labels.py.
"""

from __future__ import annotations

from study import presets

__all__ = ["method_label", "prores_tag", "series_label", "value_label"]


def method_label(method, norm=None, init=None) -> str:
    """The paper's label of a method ('Pre-LN (DS-Init)'); falls back to the norm/init when method is unset."""
    if isinstance(method, str) and method in presets.METHODS:
        return presets.METHODS[method].label
    if isinstance(norm, str):
        for spec in presets.METHODS.values():
            if spec.norm == norm and (init is None or spec.init == init):
                return spec.label
        return f"{norm}-norm" + (f" ({init})" if isinstance(init, str) else "")
    return str(method) if isinstance(method, str) else "unknown"


def prores_tag(schedule) -> str | None:
    """'ProRes' for the default linear schedule, 'ProRes-equal', 'ProRes-<schedule>'; None without ProRes."""
    if not isinstance(schedule, str) or schedule == "none":
        return None
    return "ProRes" if schedule == "linear" else f"ProRes-{schedule}"


def series_label(method, schedule, norm=None, init=None) -> str:
    """'Pre-LN', 'Pre-LN (ProRes)', 'Pre-LN (ProRes-equal)', 'Pre-LN (DS-Init, ProRes)' as in the paper."""
    base, tag = method_label(method, norm, init), prores_tag(schedule)
    if tag is None:
        return base
    return f"{base[:-1]}, {tag})" if base.endswith(")") else f"{base} ({tag})"


def value_label(value) -> str:
    """A config value as grid text: true/false, null, lists joined by '-', everything else str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "-".join(value_label(v) for v in value)
    return str(value)
