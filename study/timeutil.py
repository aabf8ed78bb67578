"""UTC timestamps, one spelling for every file the study writes (status.json, run.json, collections, reports)."""

from __future__ import annotations

import datetime as _dt

__all__ = ["utc_now", "now", "file_stamp"]


def utc_now() -> _dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return _dt.datetime.now(_dt.timezone.utc)


def now() -> str:
    """ISO 8601 to the second with the UTC offset: '2026-03-05T14:02:11+00:00' (sorts as text)."""
    return utc_now().isoformat(timespec="seconds")


def file_stamp() -> str:
    """A compact UTC stamp for file names, to the microsecond: '20260305T140211.123456Z'."""
    return utc_now().strftime("%Y%m%dT%H%M%S.%fZ")
