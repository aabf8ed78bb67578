"""Labels as the paper prints them: scale names ('1.3B'), method and series names ('Pre-LN (ProRes)').

The series and method names are also columns of the collected runs table, so their one definition sits below
study.collect, in study/labels.py; this module re-exports them so figure code takes every label from here.
"""

from __future__ import annotations

from study.labels import method_label, prores_tag, series_label

__all__ = ["SCALE_LABELS", "scale_label", "method_label", "prores_tag", "series_label"]

# Paper spelling of our scale preset names (tables and figure labels).
SCALE_LABELS = {"71m": "71M", "130m": "130M", "350m": "350M", "1.3b": "1.3B", "3b": "3B", "7b": "7B",
                **{f"71m-{n}l": f"71M-{n}L" for n in (24, 48, 72, 96, 120)}}


def scale_label(scale) -> str | None:
    """'1.3b' -> '1.3B'; a scale the paper does not name keeps its preset name; None for no scale."""
    if not isinstance(scale, str):
        return None
    return SCALE_LABELS.get(scale, scale)
