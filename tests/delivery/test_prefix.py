"""Log line prefixes: syslog (RFC 3164 and RFC 5424), ISO timestamps, maillog_file, none."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from opentelemetry_instrumentation_smtp.milter.delivery.prefix import load_timezone, parse_prefix
from tests.delivery import lines

NOW = datetime(2026, 12, 4, 21, 0, 0, tzinfo=timezone.utc)
UTC = timezone.utc
MESSAGE = lines.SENT_MESSAGE


def test_maillog_file_prefix() -> None:
    record = parse_prefix(lines.SENT, now=NOW, local_timezone=UTC)

    assert record.timestamp == datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)
    assert record.hostname == "mta"
    assert record.program == "postfix/smtp"
    assert record.pid == 3790
    assert record.message == MESSAGE


def test_rfc3164_space_padded_day() -> None:
    line = f"Dec  4 20:03:52 mx1 postfix/smtp[3790]: {MESSAGE}"

    record = parse_prefix(line, now=NOW, local_timezone=UTC)

    assert record.timestamp == datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)
    assert record.hostname == "mx1"
    assert record.program == "postfix/smtp"
    assert record.message == MESSAGE


def test_rfc3164_with_priority_and_fraction() -> None:
    line = f"<22>Dec  4 20:03:52.250 mx1 postfix-out/smtp[3790]: {MESSAGE}"

    record = parse_prefix(line, now=NOW, local_timezone=UTC)

    assert record.timestamp == datetime(2026, 12, 4, 20, 3, 52, 250000, tzinfo=UTC)
    assert record.program == "postfix-out/smtp"
    assert record.message == MESSAGE


def test_rfc3164_local_timezone() -> None:
    berlin = ZoneInfo("Europe/Berlin")

    record = parse_prefix(lines.SENT, now=NOW, local_timezone=berlin)

    assert record.timestamp == datetime(2026, 12, 4, 20, 3, 52, tzinfo=berlin)
    assert record.timestamp is not None
    assert record.timestamp.astimezone(UTC) == datetime(2026, 12, 4, 19, 3, 52, tzinfo=UTC)


def test_rfc3164_december_line_in_january() -> None:
    january = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC)

    record = parse_prefix(lines.SENT, now=january, local_timezone=UTC)

    assert record.timestamp == datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)


def test_rfc3164_february_29_of_last_year() -> None:
    march_2029 = datetime(2029, 3, 1, tzinfo=UTC)
    line = f"Feb 29 10:00:00 mx1 postfix/smtp[1]: {MESSAGE}"

    record = parse_prefix(line, now=march_2029, local_timezone=UTC)

    assert record.timestamp == datetime(2028, 2, 29, 10, 0, 0, tzinfo=UTC)


def test_rfc3164_without_hostname() -> None:
    line = f"Dec  4 20:03:52 postfix/smtp[3790]: {MESSAGE}"

    record = parse_prefix(line, now=NOW, local_timezone=UTC)

    assert record.hostname is None
    assert record.program == "postfix/smtp"
    assert record.pid == 3790
    assert record.message == MESSAGE


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-12-04T20:03:52+00:00", datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)),
        ("2026-12-04T20:03:52.123456Z", datetime(2026, 12, 4, 20, 3, 52, 123456, tzinfo=UTC)),
        (
            "2026-12-04T21:03:52.123456789+0100",
            datetime(2026, 12, 4, 20, 3, 52, 123456, tzinfo=UTC),
        ),
        ("2026-12-04T15:03:52-05:00", datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)),
        ("2026-12-04 20:03:52", datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)),
    ],
)
def test_iso_timestamps(stamp: str, expected: datetime) -> None:
    line = f"{stamp} mx1 postfix/smtp[3790]: {MESSAGE}"

    record = parse_prefix(line, now=NOW, local_timezone=UTC)

    assert record.timestamp == expected
    assert record.hostname == "mx1"
    assert record.program == "postfix/smtp"
    assert record.message == MESSAGE


def test_rfc5424_line() -> None:
    line = f"<22>1 2026-12-04T20:03:52.5Z mx1 postfix/smtp 3790 - - \ufeff{MESSAGE}"

    record = parse_prefix(line, now=NOW, local_timezone=UTC)

    assert record.timestamp == datetime(2026, 12, 4, 20, 3, 52, 500000, tzinfo=UTC)
    assert record.hostname == "mx1"
    assert record.program == "postfix/smtp"
    assert record.pid == 3790
    assert record.message == MESSAGE


def test_rfc5424_structured_data_and_nil_values() -> None:
    line = (
        '<22>1 2026-12-04T20:03:52+00:00 - postfix/smtp - ID47 [origin ip="192.0.2.1"]'
        f'[meta x="a\\]b"] {MESSAGE}'
    )

    record = parse_prefix(line, now=NOW, local_timezone=UTC)

    assert record.timestamp == datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)
    assert record.hostname is None
    assert record.pid is None
    assert record.message == MESSAGE


def test_tag_without_timestamp() -> None:
    record = parse_prefix(f"postfix/smtp[3790]: {MESSAGE}", now=NOW, local_timezone=UTC)

    assert record.timestamp is None
    assert record.program == "postfix/smtp"
    assert record.message == MESSAGE


def test_bare_message_from_journalctl_cat() -> None:
    record = parse_prefix(MESSAGE + "\r\n", now=NOW, local_timezone=UTC)

    assert record.timestamp is None
    assert record.program is None
    assert record.hostname is None
    assert record.message == MESSAGE


def test_invalid_date_is_bare_message() -> None:
    line = f"Dec 32 20:03:52 mx1 postfix/smtp[3790]: {MESSAGE}"

    record = parse_prefix(line, now=NOW, local_timezone=UTC)

    assert record.timestamp is None
    assert record.message == line


def test_system_local_timezone_by_default() -> None:
    record = parse_prefix(lines.SENT, now=NOW)

    assert record.timestamp is not None
    assert record.timestamp.utcoffset() is not None
    expected = datetime(2026, 12, 4, 20, 3, 52).astimezone()
    assert record.timestamp == expected


def test_load_timezone() -> None:
    assert load_timezone(None) is None
    assert load_timezone("UTC") == ZoneInfo("UTC")
    with pytest.raises(ValueError, match="invalid --postfix-log-timezone 'Mars/Olympus'"):
        load_timezone("Mars/Olympus")


def test_future_skew_within_a_day_kept() -> None:
    # A line a few hours ahead of the reader's clock stays in the current year.
    now = datetime(2026, 12, 4, 18, 0, 0, tzinfo=UTC)

    record = parse_prefix(lines.SENT, now=now, local_timezone=UTC)

    assert record.timestamp is not None
    assert record.timestamp - now == timedelta(hours=2, minutes=3, seconds=52)
