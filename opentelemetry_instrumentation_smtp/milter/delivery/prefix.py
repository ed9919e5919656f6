"""Sans-IO parsing of the prefix that a logger writes before each Postfix log message.

Supported shapes, each optionally preceded by a ``<PRI>`` syslog priority:

- RFC 3164 syslog, as written by rsyslog and syslog-ng in their default file format and by
  ``journalctl -o short``: ``Dec  4 20:03:52 mx postfix/smtp[3790]: MESSAGE``. Postfix's own
  ``maillog_file`` (postlogd, Postfix 3.4 and later) uses the same shape with a zero-padded
  day: ``Dec 04 20:03:52 mta postfix/smtp[3790]: MESSAGE``.
- ISO 8601 / RFC 3339 timestamps, as written by rsyslog's ``RSYSLOG_FileFormat`` and by
  ``journalctl -o short-iso`` or ``short-iso-precise``:
  ``2026-12-04T20:03:52.123456+00:00 mx postfix/smtp[3790]: MESSAGE``.
- RFC 5424 syslog: ``<22>1 2026-12-04T20:03:52.123Z mx postfix/smtp 3790 - - MESSAGE``.
- A bare ``postfix/smtp[3790]: MESSAGE``, or the message alone (``journalctl -o cat``).
  Such lines have no timestamp, and the caller uses the time it read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

_PRIORITY = r"(?:<\d{1,3}>)?"

_RFC3164 = re.compile(
    _PRIORITY + r"(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) "
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?: (?P<year>\d{4}))? (?P<rest>.*)",
    re.DOTALL,
)

_ISO_TIMESTAMP = (
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[T ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?"
    r"(?P<offset>Z|[+-]\d{2}:?\d{2})?"
)
_ISO = re.compile(_PRIORITY + _ISO_TIMESTAMP + r" (?P<rest>.*)", re.DOTALL)
_ISO_ONLY = re.compile(_ISO_TIMESTAMP)

_RFC5424 = re.compile(
    r"<\d{1,3}>1 (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) (?P<procid>\S+) \S+ "
    r"(?P<structured>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<message>.*))?",
    re.DOTALL,
)

# "HOST TAG[PID]: MESSAGE" or "TAG[PID]: MESSAGE". A host name never contains "[", which
# keeps the optional host from swallowing the tag. Postfix always logs its process id.
_TAGGED = re.compile(
    r"(?:(?P<hostname>[^\s\[\]]+) )?(?P<program>[^\s\[\]:]+)\[(?P<pid>\d+)\]: (?P<message>.*)",
    re.DOTALL,
)

# RFC 3164 lines carry no year. A line that would lie more than this far in the future is
# taken to be from the previous year, which covers reading December lines in January.
_MAX_FUTURE_SKEW = timedelta(days=1)


@dataclass(frozen=True)
class LogRecord:
    """One log line split into its prefix fields and the Postfix message."""

    message: str
    timestamp: datetime | None = None
    """Time zone-aware time of the line, or None when the line carries no timestamp."""
    hostname: str | None = None
    program: str | None = None
    """Syslog tag without the process id, such as ``postfix/smtp`` or ``postfix-out/smtp``."""
    pid: int | None = None


def parse_prefix(line: str, *, now: datetime, local_timezone: tzinfo | None = None) -> LogRecord:
    """Split ``line`` into its prefix fields and message.

    ``now`` (time zone-aware) supplies the year of RFC 3164 timestamps. Timestamps without
    an offset are in ``local_timezone``, or in the system's local time zone when it is None.
    A line in no known shape comes back whole as the message, with no timestamp.
    """
    line = line.rstrip("\r\n")

    match = _RFC5424.fullmatch(line)
    if match:
        return _from_rfc5424(match, now, local_timezone)

    match = _ISO.fullmatch(line)
    if match:
        timestamp = _iso_datetime(match, local_timezone)
        if timestamp is not None:
            return _from_tagged(match.group("rest"), timestamp)

    match = _RFC3164.fullmatch(line)
    if match and match.group("month") in _MONTHS:
        timestamp = _rfc3164_datetime(match, now, local_timezone)
        if timestamp is not None:
            return _from_tagged(match.group("rest"), timestamp)

    return _from_tagged(line, None)


def _from_tagged(rest: str, timestamp: datetime | None) -> LogRecord:
    match = _TAGGED.fullmatch(rest)
    if match is None:
        return LogRecord(message=rest, timestamp=timestamp)
    return LogRecord(
        message=match.group("message"),
        timestamp=timestamp,
        hostname=match.group("hostname"),
        program=match.group("program"),
        pid=int(match.group("pid")),
    )


def _from_rfc5424(match: re.Match[str], now: datetime, local_timezone: tzinfo | None) -> LogRecord:
    timestamp: datetime | None = None
    iso = _ISO_ONLY.fullmatch(match.group("timestamp"))
    if iso is not None:
        timestamp = _iso_datetime(iso, local_timezone)
    message = match.group("message") or ""
    # RFC 5424 marks a UTF-8 message with a byte order mark.
    message = message.removeprefix("\ufeff")
    procid = match.group("procid")
    return LogRecord(
        message=message,
        timestamp=timestamp,
        hostname=_nil_to_none(match.group("hostname")),
        program=_nil_to_none(match.group("app")),
        pid=int(procid) if procid.isdigit() else None,
    )


def _nil_to_none(value: str) -> str | None:
    return None if value == "-" else value


def _microseconds(fraction: str | None) -> int:
    if not fraction:
        return 0
    return int(fraction[:6].ljust(6, "0"))


def _iso_datetime(match: re.Match[str], local_timezone: tzinfo | None) -> datetime | None:
    offset = match.group("offset")
    zone: tzinfo | None
    if offset is None:
        zone = local_timezone
    elif offset == "Z":
        zone = timezone.utc
    else:
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        zone = timezone(-delta if offset[0] == "-" else delta)
    try:
        naive = datetime(
            int(match.group("year")),
            int(match.group("month")),
            int(match.group("day")),
            int(match.group("hour")),
            int(match.group("minute")),
            int(match.group("second")),
            _microseconds(match.group("fraction")),
        )
    except ValueError:
        return None
    return _localize(naive, zone)


def _rfc3164_datetime(
    match: re.Match[str], now: datetime, local_timezone: tzinfo | None
) -> datetime | None:
    def build(year: int) -> datetime | None:
        try:
            naive = datetime(
                year,
                _MONTHS[match.group("month")],
                int(match.group("day")),
                int(match.group("hour")),
                int(match.group("minute")),
                int(match.group("second")),
                _microseconds(match.group("fraction")),
            )
        except ValueError:
            # A day out of range, or February 29 in a year that is not a leap year.
            return None
        return _localize(naive, local_timezone)

    explicit_year = match.group("year")
    if explicit_year:
        return build(int(explicit_year))
    timestamp = build(now.year)
    if timestamp is None or timestamp - now > _MAX_FUTURE_SKEW:
        return build(now.year - 1)
    return timestamp


def _localize(naive: datetime, zone: tzinfo | None) -> datetime:
    if zone is None:
        # astimezone() on a naive datetime takes it as system local time.
        return naive.astimezone()
    return naive.replace(tzinfo=zone)


def load_timezone(name: str | None) -> tzinfo | None:
    """Return the named IANA time zone, or None for the system's local time zone."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"invalid --postfix-log-timezone {name!r}: not an IANA time zone name "
            "such as 'UTC' or 'Europe/Berlin'"
        ) from None
