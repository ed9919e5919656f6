"""Queue id hand-offs: bounce notices and next hops join the trace of the message."""

from __future__ import annotations

from tests.conftest import Telemetry
from tests.delivery import lines
from tests.delivery.helpers import (
    QUEUE_ID,
    FakeClock,
    deliver_spans,
    make_processor,
    milter_span,
)


def test_bounce_notice_follows_bounced_attempt(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    parent = milter_span(telemetry)
    processor.register_message(QUEUE_ID, parent)

    for line in (
        lines.BOUNCED,
        lines.NOTIFICATION_CLEANUP,
        lines.NOTIFICATION_QMGR,
        lines.NOTIFICATION,
        lines.NOTIFICATION_SENT,
        lines.NOTIFICATION_REMOVED,
    ):
        processor.process_line(line)

    bounced, notice = deliver_spans(telemetry)
    assert bounced.context is not None
    assert notice.parent is not None
    assert notice.parent.span_id == bounced.context.span_id
    assert notice.context is not None
    assert notice.context.trace_id == parent.trace_id
    attributes = dict(notice.attributes or {})
    assert attributes["smtp.queue_id"] == "3D43E20C0D4"
    assert attributes["smtp.delivery.handoff.from_queue_id"] == QUEUE_ID
    assert attributes["smtp.delivery.handoff.kind"] == "notification"
    assert attributes["smtp.delivery.origin_queue_id"] == QUEUE_ID
    assert attributes["smtp.recipient.domain"] == "app.example"
    assert "3D43E20C0D4" not in processor.queue_map


def test_notice_delivered_before_handoff_line(telemetry: Telemetry) -> None:
    clock = FakeClock()
    processor = make_processor(telemetry, unmatched_delay=2.0, clock=clock)
    processor.register_message(QUEUE_ID, milter_span(telemetry))
    processor.process_line(lines.BOUNCED)

    processor.process_line(lines.NOTIFICATION_SENT)
    assert processor.pending_count == 1
    assert len(deliver_spans(telemetry)) == 1
    processor.process_line(lines.NOTIFICATION)

    assert processor.pending_count == 0
    bounced, notice = deliver_spans(telemetry)
    assert bounced.context is not None
    assert notice.parent is not None
    assert notice.parent.span_id == bounced.context.span_id


def test_non_delivery_notice_parent_is_failure(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    # Postfix logs the successful recipient after the bounced one, then the notification.
    for line in (lines.BOUNCED, lines.SENT, lines.NOTIFICATION, lines.NOTIFICATION_SENT):
        processor.process_line(line)

    bounced, sent, notice = deliver_spans(telemetry)
    assert dict(bounced.attributes or {})["smtp.delivery.status"] == "bounced"
    assert dict(sent.attributes or {})["smtp.delivery.status"] == "sent"
    assert bounced.context is not None
    assert notice.parent is not None
    assert notice.parent.span_id == bounced.context.span_id


def test_success_notice_parent_is_sent_attempt(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))
    success_notice = lines.NOTIFICATION.replace(
        "sender non-delivery notification", "sender delivery status notification"
    )

    for line in (lines.BOUNCED, lines.SENT, success_notice, lines.NOTIFICATION_SENT):
        processor.process_line(line)

    _bounced, sent, notice = deliver_spans(telemetry)
    assert sent.context is not None
    assert notice.parent is not None
    assert notice.parent.span_id == sent.context.span_id
    assert dict(notice.attributes or {})["smtp.delivery.handoff.kind"] == "notification"


def test_next_hop_queue_id_followed(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))
    processor.process_line(lines.SENT)
    # The next hop is a second Postfix instance that logs to the same file.
    next_hop_line = (
        "Dec 04 20:03:53 mta postfix-out/smtp[4001]: SINK123: to=<ok@dest.example>, "
        "relay=mx.dest.example[192.0.2.10]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, "
        "status=sent (250 2.0.0 accepted)"
    )

    processor.process_line(next_hop_line)

    first, second = deliver_spans(telemetry)
    assert first.context is not None
    assert second.parent is not None
    assert second.parent.span_id == first.context.span_id
    attributes = dict(second.attributes or {})
    assert attributes["smtp.delivery.handoff.kind"] == "next_hop"
    assert attributes["smtp.delivery.handoff.from_queue_id"] == QUEUE_ID
    assert attributes["server.address"] == "mx.dest.example"
