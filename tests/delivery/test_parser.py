"""Postfix log messages to delivery events."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opentelemetry_instrumentation_smtp.milter.delivery.parser import (
    Delays,
    DeliveryAttempt,
    LineResult,
    MessageExpired,
    MessageRemoved,
    QueueIdHandoff,
    Relay,
    RemoteReply,
    parse_line,
    transport_of,
)
from tests.delivery import lines

UTC = timezone.utc
NOW = datetime(2026, 12, 4, 21, 0, 0, tzinfo=UTC)
AT_52 = datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC)


def attempt_of(line: str) -> DeliveryAttempt:
    parsed = parse_line(line, now=NOW, local_timezone=UTC)
    assert parsed.result is LineResult.EVENT
    assert isinstance(parsed.event, DeliveryAttempt)
    return parsed.event


def test_sent_with_next_hop_queue_id() -> None:
    attempt = attempt_of(lines.SENT)

    assert attempt == DeliveryAttempt(
        timestamp=AT_52,
        queue_id="34DE520C0CD",
        recipient="ok@dest.example",
        original_recipient=None,
        relay=Relay("127.0.0.1[127.0.0.1]:2600", "127.0.0.1", "127.0.0.1", 2600),
        delay=0.04,
        delays=Delays(0.01, 0.01, 0.0, 0.02),
        dsn="2.0.0",
        status="sent",
        raw_status="sent",
        detail="250 2.0.0 Ok: queued as SINK123",
        reply=RemoteReply(250, "2.0.0 Ok: queued as SINK123"),
        next_hop_queue_id="SINK123",
        connection_use=None,
        program="postfix/smtp",
    )


def test_deferred_with_remote_4xx() -> None:
    attempt = attempt_of(lines.DEFERRED)

    assert attempt.status == "deferred"
    assert attempt.dsn == "4.3.0"
    assert attempt.delay == 0.03
    assert attempt.delays == Delays(0.01, 0.01, 0.0, 0.01)
    assert attempt.reply == RemoteReply(
        451, "4.3.0 <defer@dest.example> try again later", "127.0.0.1", "127.0.0.1", "RCPT TO"
    )
    assert attempt.next_hop_queue_id is None


def test_bounced_with_remote_5xx() -> None:
    attempt = attempt_of(lines.BOUNCED)

    assert attempt.status == "bounced"
    assert attempt.dsn == "5.1.1"
    assert attempt.recipient == "reject@dest.example"
    assert attempt.reply == RemoteReply(
        550,
        "5.1.1 <reject@dest.example>: Recipient address rejected: User unknown",
        "127.0.0.1",
        "127.0.0.1",
        "RCPT TO",
    )


def test_connection_refused_names_the_server() -> None:
    attempt = attempt_of(lines.CONNECTION_REFUSED)

    assert attempt.status == "deferred"
    assert attempt.dsn == "4.4.1"
    assert attempt.relay == Relay("none", "127.0.0.1", "127.0.0.1", 2600)
    assert attempt.reply is None
    assert attempt.detail == "connect to 127.0.0.1[127.0.0.1]:2600: Connection refused"


def test_retry_delay_counts_from_arrival() -> None:
    attempt = attempt_of(lines.DEFERRED_RETRY)

    assert attempt.delay == 13.0
    assert attempt.delays == Delays(13.0, 0.02, 0.0, 0.01)
    assert attempt.timestamp == datetime(2026, 12, 4, 20, 4, 5, tzinfo=UTC)


def test_expired() -> None:
    parsed = parse_line(lines.EXPIRED, now=NOW, local_timezone=UTC)

    assert parsed.result is LineResult.EVENT
    assert parsed.event == MessageExpired(
        datetime(2026, 12, 4, 20, 4, 5, tzinfo=UTC), "34DE520C0CD", "postfix/qmgr"
    )


def test_bounce_notice_with_new_queue_id() -> None:
    parsed = parse_line(lines.NOTIFICATION, now=NOW, local_timezone=UTC)

    assert parsed.result is LineResult.EVENT
    assert parsed.event == QueueIdHandoff(
        AT_52, "34DE520C0CD", "3D43E20C0D4", "sender non-delivery notification", "postfix/bounce"
    )


@pytest.mark.parametrize(
    "kind",
    [
        "sender delivery status notification",
        "sender delay notification",
        "postmaster non-delivery notification",
    ],
)
def test_other_notifications(kind: str) -> None:
    line = f"Dec 04 20:03:52 mta postfix/bounce[3793]: 34DE520C0CD: {kind}: 3D43E20C0D4"

    parsed = parse_line(line, now=NOW, local_timezone=UTC)

    assert isinstance(parsed.event, QueueIdHandoff)
    assert parsed.event.kind == kind
    assert parsed.event.new_queue_id == "3D43E20C0D4"


def test_removed() -> None:
    parsed = parse_line(lines.REMOVED, now=NOW, local_timezone=UTC)

    assert parsed.event == MessageRemoved(
        datetime(2026, 12, 4, 20, 4, 5, tzinfo=UTC), "34DE520C0CD", "postfix/qmgr"
    )


def test_orig_to_conn_use_and_ipv6_relay() -> None:
    line = (
        "Mar  1 08:00:00 mx1 postfix/smtp[77]: 4Y3Vzk0RQJz9sXm: to=<a.user@example.net>, "
        "orig_to=<alias@example.org>, relay=mx.example.net[2001:db8::25]:25, conn_use=3, "
        "delay=1.5, delays=0.2/0.3/0.4/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok <x@y>)"
    )

    attempt = attempt_of(line)

    assert attempt.queue_id == "4Y3Vzk0RQJz9sXm"
    assert attempt.original_recipient == "alias@example.org"
    assert attempt.relay == Relay(
        "mx.example.net[2001:db8::25]:25", "mx.example.net", "2001:db8::25", 25
    )
    assert attempt.connection_use == 3
    assert attempt.next_hop_queue_id is None


def test_lmtp_reply_with_end_of_data_command() -> None:
    line = (
        "Mar  1 08:00:00 mx1 postfix/lmtp[77]: 3F2A81C0E: to=<u@example.net>, "
        "relay=mail.example.net[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, "
        "dsn=4.2.2, status=deferred (host mail.example.net[private/dovecot-lmtp] said: "
        "452 4.2.2 <u@example.net> Quota exceeded (mailbox for user is full) "
        "(in reply to end of DATA command))"
    )

    attempt = attempt_of(line)

    assert attempt.relay == Relay(
        "mail.example.net[private/dovecot-lmtp]", "mail.example.net", "private/dovecot-lmtp"
    )
    assert attempt.reply == RemoteReply(
        452,
        "4.2.2 <u@example.net> Quota exceeded (mailbox for user is full)",
        "mail.example.net",
        "private/dovecot-lmtp",
        "end of DATA",
    )


def test_local_delivery_without_reply() -> None:
    line = (
        "Mar  1 08:00:00 mx1 postfix/local[77]: 3F2A81C0E: to=<root@mx1.example>, "
        "relay=local, delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, "
        "status=sent (delivered to mailbox)"
    )

    attempt = attempt_of(line)

    assert attempt.relay == Relay("local")
    assert attempt.reply is None
    assert attempt.detail == "delivered to mailbox"
    assert transport_of(attempt.program) == "local"


def test_softbounce_counts_as_deferred() -> None:
    line = lines.BOUNCED.replace("status=bounced", "status=SOFTBOUNCE")

    attempt = attempt_of(line)

    assert attempt.status == "deferred"
    assert attempt.raw_status == "SOFTBOUNCE"


def test_address_probe_is_ignored() -> None:
    line = lines.SENT.replace("status=sent", "status=deliverable")

    parsed = parse_line(line, now=NOW, local_timezone=UTC)

    assert parsed.result is LineResult.IGNORED
    assert parsed.event is None


@pytest.mark.parametrize(
    "line",
    [
        lines.SMTPD_CLIENT,
        lines.SMTPD_CONNECT,
        lines.NOTIFICATION_CLEANUP,
        lines.NOTIFICATION_QMGR,
        lines.CONNECT_FAILURE_NOTICE,
        lines.MASTER_STARTED,
        "34DE520C0CD: client=unknown[127.0.0.1]",
    ],
)
def test_other_postfix_lines_ignored(line: str) -> None:
    parsed = parse_line(line, now=NOW, local_timezone=UTC)

    assert parsed.result is LineResult.IGNORED
    assert parsed.event is None


@pytest.mark.parametrize(
    "line",
    [
        lines.SENT.replace("delay=0.04", "delay=soon"),
        lines.SENT.replace("delays=0.01/0.01/0/0.02", "delays=0.01/0.01"),
        lines.SENT.replace("dsn=2.0.0", "dsn=9.9.9"),
        lines.SENT.replace("status=sent", "status=teleported"),
        lines.SENT.replace("status=sent", "status=expired"),
        lines.SENT[:-40],
    ],
)
def test_malformed_delivery_lines(line: str) -> None:
    parsed = parse_line(line, now=NOW, local_timezone=UTC)

    assert parsed.result is LineResult.MALFORMED
    assert parsed.event is None


@pytest.mark.parametrize(
    "line",
    ["", "garbage", "\x00\x01\x02", '{"json": true}', "Dec 04 20:03:52 half a line"],
)
def test_garbage_is_unknown(line: str) -> None:
    parsed = parse_line(line, now=NOW, local_timezone=UTC)

    assert parsed.result is LineResult.UNKNOWN
    assert parsed.event is None


def test_bare_message_uses_read_time() -> None:
    attempt = attempt_of(lines.SENT_MESSAGE)

    assert attempt.timestamp == NOW
    assert attempt.program is None
    assert attempt.queue_id == "34DE520C0CD"


def test_transport_of() -> None:
    assert transport_of("postfix/smtp") == "smtp"
    assert transport_of("postfix-out/smtp") == "smtp"
    assert transport_of("postfix/submission/smtpd") == "smtpd"
    assert transport_of(None) is None


@given(
    st.one_of(
        st.text(max_size=400),
        st.sampled_from([lines.SENT, lines.DEFERRED, lines.EXPIRED, lines.NOTIFICATION]).flatmap(
            lambda line: st.integers(0, len(line)).map(lambda cut: line[:cut])
        ),
    )
)
def test_parser_never_raises(line: str) -> None:
    parsed = parse_line(line, now=NOW, local_timezone=UTC)

    assert isinstance(parsed.result, LineResult)
    assert (parsed.event is not None) == (parsed.result is LineResult.EVENT)
