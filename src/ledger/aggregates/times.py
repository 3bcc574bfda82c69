"""Dates and times as clients and files write them, read in one place: every date parameter, body field and
file parser of the ledger goes through these functions (API.md, *Input, stated exactly*).

A time is RFC 3339 with a zone: `2026-11-20T10:00:00Z` or `2026-11-20T10:00:00+02:00`, an upper-case `T` and
`Z`, seconds required, at most nine fraction digits (kept to the microsecond). Epoch numbers, lower-case
letters, a space for the `T` and zone-less times are refused. A day is `YYYY-MM-DD`.

Python's datetime spans 0001-01-01T00:00 to 9999-12-31T23:59:59.999999 in UTC, so a moment written with an
offset can fall outside once converted (`0001-01-01T00:00:00+14:00`), and the day after 9999-12-31 does not
exist. A *bound* of a filter is clamped (nothing can be recorded outside the span, so the answer is the same);
a *fact* (a purchase, a shipment, a report row) outside the span is refused with the field named.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from ledger.aggregates.errors import InvalidInputError

MIN_TIME = datetime.min.replace(tzinfo=UTC)
MAX_TIME = datetime.max.replace(tzinfo=UTC)
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_RFC3339 = re.compile(RFC3339_PATTERN)
_DAY = re.compile(DAY_PATTERN)
EXAMPLE = "2026-11-20T10:00:00Z"


class InvalidTimeError(InvalidInputError):
    code = "invalid-time"


def parse_time(text: str, field: str) -> datetime:
    """An RFC 3339 time with its zone, as written (not converted): InvalidTimeError naming `field` otherwise."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        msg = f"{field} {text[:60]!r} is not an RFC 3339 time with a zone, e.g. {EXAMPLE}"
        raise InvalidTimeError(msg, field)
    fraction, zone = match.group(1) or "", match.group(2)
    micro = fraction[:7].ljust(7, "0") if fraction else ""  # nanoseconds are kept to the microsecond
    try:
        return datetime.fromisoformat(text[:19] + micro + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        raise InvalidTimeError(f"{field} {text[:60]!r} is not a time of the calendar", field) from None


def parse_day(text: str, field: str) -> date:
    """A `YYYY-MM-DD` day in 0001-01-01 ... 9999-12-31: InvalidTimeError naming `field` otherwise."""
    if not _DAY.fullmatch(text):
        raise InvalidTimeError(f"{field} {text[:60]!r} is not a day (YYYY-MM-DD)", field)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidTimeError(f"{field} {text[:60]!r} is not a day of the calendar", field) from None


def to_utc(moment: datetime, field: str) -> datetime:
    """A fact's moment in UTC; one that falls outside years 1 to 9999 there is refused."""
    if moment.utcoffset() is None:
        raise InvalidTimeError(f"{field} needs a time zone, e.g. {EXAMPLE}", field)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidTimeError(f"{field} is outside years 1 to 9999 once converted to UTC", field) from None


def clamp_utc(moment: datetime) -> datetime:
    """A filter bound in UTC, clamped to the span Python (and so the ledger) can hold."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        offset = moment.utcoffset()
        return MIN_TIME if offset is not None and offset > timedelta(0) else MAX_TIME


def parse_moment(text: str, field: str) -> datetime:
    """A fact's time (RFC 3339), kept in its own offset; one outside years 1 to 9999 in UTC is refused."""
    moment = parse_time(text, field)
    to_utc(moment, field)
    return moment


def parse_bound(text: str, field: str) -> datetime:
    """A filter's time bound (RFC 3339), in UTC, clamped to the span the ledger can hold."""
    return clamp_utc(parse_time(text, field))


def day_start(day: date) -> datetime:
    """00:00 UTC of `day`."""
    return datetime.combine(day, time(), UTC)


def after_day(day: date) -> datetime | None:
    """00:00 UTC of the day after `day`: the exclusive end of a range that includes `day`. None after the
    calendar's last day (no moment comes after it, so the range has no end)."""
    return None if day == date.max else day_start(day + timedelta(days=1))
