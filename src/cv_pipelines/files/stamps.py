"""The UTC timestamp that names run folders and run ids: ``20261201T203000Z``."""

from __future__ import annotations

from datetime import UTC, datetime

#: ``strftime`` format of :func:`utc_stamp`: sorts as text in time order, no ``:`` for Windows.
UTC_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def utc_stamp(now: datetime | None = None) -> str:
    """``now`` (default: the current time) in UTC as ``YYYYMMDDTHHMMSSZ``."""
    moment = now.astimezone(UTC) if now is not None else datetime.now(UTC)
    return moment.strftime(UTC_STAMP_FORMAT)
