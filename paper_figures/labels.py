"""Labels as the paper prints them: scale names ('1.3B'), method and series names ('Pre-LN (ProRes)').

The scale and method names are paper facts of study/presets.py's records, and the series names are also columns of
the collected runs table (study/labels.py); this module re-exports them so figure code takes every label from here.
"""

from __future__ import annotations

from study.labels import method_label, prores_tag, series_label
from study.presets import SCALES

__all__ = ["SCALE_LABELS", "scale_label", "method_label", "prores_tag", "series_label"]

# Paper spelling of our scale preset names (tables and figure labels): study.presets.Scale.label.
SCALE_LABELS = {name: scale.label for name, scale in SCALES.items()}


def scale_label(scale) -> str | None:
    """'1.3b' -> '1.3B'; a scale the paper does not name keeps its preset name; None for no scale."""
    if not isinstance(scale, str):
        return None
    return SCALE_LABELS.get(scale, scale)
