"""Log lines to spans and metrics, joined to the milter's span by queue id."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from opentelemetry_instrumentation_smtp.milter.delivery import processor as processor_module
from opentelemetry_instrumentation_smtp.milter.delivery.parser import LineResult
from opentelemetry_instrumentation_smtp.milter.delivery.processor import DeliveryProcessor
from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import QueueIdMap
from opentelemetry_instrumentation_smtp.milter.delivery.telemetry import DeliveryTelemetry
from tests.conftest import Telemetry
from tests.delivery import lines
from tests.delivery.helpers import counter_values, metric_points

UTC = timezone.utc
QUEUE_ID = "34DE520C0CD"
AT_52_NS = int(datetime(2026, 12, 4, 20, 3, 52, tzinfo=UTC).timestamp()) * 1_000_000_000
AT_05_NS = int(datetime(2026, 12, 4, 20, 4, 5, tzinfo=UTC).timestamp()) * 1_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_processor(
    telemetry: Telemetry,
    *,
    capture_addresses: bool = False,
    unmatched_spans: bool = True,
    unmatched_delay: float = 0.0,
    clock: FakeClock | None = None,
) -> DeliveryProcessor:
    clock = clock or FakeClock()
    delivery = DeliveryTelemetry(
        telemetry.tracer_provider,
        telemetry.meter_provider,
        capture_addresses=capture_addresses,
        unmatched_spans=unmatched_spans,
    )
    queue_map = QueueIdMap(1000, 3600.0, 60.0, clock=clock, on_evict=delivery.count_eviction)
    return DeliveryProcessor(
        queue_map,
        delivery,
        unmatched_delay=unmatched_delay,
        local_timezone=UTC,
        clock=clock,
        wall_clock=lambda: datetime(2026, 12, 4, 21, 0, 0, tzinfo=UTC),
    )


def milter_span(telemetry: Telemetry) -> SpanContext:
    span = telemetry.tracer.start_span("smtp receive", kind=SpanKind.SERVER)
    span.end()
    return span.get_span_context()


def deliver_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return telemetry.spans("smtp deliver")


def by_status(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    result = {}
    for span in spans:
        assert span.attributes is not None
        result[str(span.attributes["smtp.delivery.status"])] = span
    return result


def test_three_recipients_join_milter_span(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    parent = milter_span(telemetry)
    processor.register_message(QUEUE_ID, parent)

    for line in (lines.DEFERRED, lines.BOUNCED, lines.SENT):
        assert processor.process_line(line) is LineResult.EVENT

    spans = by_status(deliver_spans(telemetry))
    assert sorted(spans) == ["bounced", "deferred", "sent"]
    for span in spans.values():
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == parent.span_id
        assert span.context is not None
        assert span.context.trace_id == parent.trace_id
        assert span.end_time == AT_52_NS
    assert spans["sent"].start_time == AT_52_NS - 40_000_000
    assert spans["deferred"].start_time == AT_52_NS - 30_000_000


def test_sent_span_attributes(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    processor.process_line(lines.SENT)

    (span,) = deliver_spans(telemetry)
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "messaging.system": "smtp",
        "messaging.operation.type": "send",
        "smtp.queue_id": QUEUE_ID,
        "smtp.delivery.status": "sent",
        "smtp.response.enhanced_status_code": "2.0.0",
        "smtp.response.status_code": 250,
        "smtp.response.message": "2.0.0 Ok: queued as SINK123",
        "smtp.delivery.relay": "127.0.0.1[127.0.0.1]:2600",
        "smtp.delivery.transport": "smtp",
        "server.address": "127.0.0.1",
        "server.port": 2600,
        "network.peer.address": "127.0.0.1",
        "smtp.recipient.domain": "dest.example",
        "smtp.delivery.delay.total": 0.04,
        "smtp.delivery.delay.before_queue_manager": 0.01,
        "smtp.delivery.delay.in_queue_manager": 0.01,
        "smtp.delivery.delay.connection_setup": 0.0,
        "smtp.delivery.delay.transmission": 0.02,
    }


def test_deferred_span_error_and_redaction(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    processor.process_line(lines.DEFERRED)

    (span,) = deliver_spans(telemetry)
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == (
        "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 <redacted> try again later "
        "(in reply to RCPT TO command)"
    )
    assert attributes["error.type"] == "4.3.0"
    assert attributes["smtp.response.status_code"] == 451
    assert attributes["smtp.response.enhanced_status_code"] == "4.3.0"
    assert attributes["smtp.response.message"] == "4.3.0 <redacted> try again later"
    assert attributes["smtp.delivery.command"] == "RCPT TO"
    assert "smtp.recipient.address" not in attributes
    assert not any("defer@" in str(value) for value in attributes.values())


def test_bounced_span_with_addresses_opted_in(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry, capture_addresses=True)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    processor.process_line(lines.BOUNCED)

    (span,) = deliver_spans(telemetry)
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "5.1.1"
    assert attributes["smtp.delivery.status"] == "bounced"
    assert attributes["smtp.response.status_code"] == 550
    assert attributes["smtp.response.message"] == (
        "5.1.1 <reject@dest.example>: Recipient address rejected: User unknown"
    )
    assert attributes["smtp.recipient.address"] == "reject@dest.example"
    assert attributes["smtp.recipient.domain"] == "dest.example"


def test_connection_refused_span(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message("830E720C02D", milter_span(telemetry))

    processor.process_line(lines.CONNECTION_REFUSED)

    (span,) = deliver_spans(telemetry)
    attributes = dict(span.attributes or {})
    assert attributes["smtp.delivery.status"] == "deferred"
    assert attributes["error.type"] == "4.4.1"
    assert attributes["smtp.delivery.relay"] == "none"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == 2600
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert attributes["smtp.delivery.detail"] == (
        "connect to 127.0.0.1[127.0.0.1]:2600: Connection refused"
    )
    assert "smtp.response.status_code" not in attributes
    assert "smtp.response.message" not in attributes
    assert span.status.description == "connect to 127.0.0.1[127.0.0.1]:2600: Connection refused"


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


def test_line_before_registration_waits(telemetry: Telemetry) -> None:
    clock = FakeClock()
    processor = make_processor(telemetry, unmatched_delay=2.0, clock=clock)
    parent = milter_span(telemetry)

    processor.process_line(lines.SENT)
    clock.now += 1.5
    assert processor.release_due() == 0
    processor.register_message(QUEUE_ID, parent)

    (span,) = deliver_spans(telemetry)
    assert span.parent is not None
    assert span.parent.span_id == parent.span_id
    assert counter_values(telemetry.metric_reader, "smtp.delivery.unmatched", "x") == {}


def test_unmatched_after_delay_is_new_trace(telemetry: Telemetry) -> None:
    clock = FakeClock()
    processor = make_processor(telemetry, unmatched_delay=2.0, clock=clock)

    processor.process_line(lines.DEFERRED)
    assert deliver_spans(telemetry) == []
    clock.now += 2.0
    assert processor.release_due() == 1

    (span,) = deliver_spans(telemetry)
    assert span.parent is None
    assert list(span.links) == []
    assert dict(span.attributes or {})["smtp.queue_id"] == QUEUE_ID
    unmatched = counter_values(
        telemetry.metric_reader, "smtp.delivery.unmatched", "smtp.delivery.status"
    )
    assert unmatched == {"deferred": 1}


def test_unmatched_skipped_keeps_metrics(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry, unmatched_spans=False)

    processor.process_line(lines.BOUNCED)

    assert deliver_spans(telemetry) == []
    attempts = counter_values(
        telemetry.metric_reader, "smtp.delivery.attempts", "smtp.delivery.status"
    )
    assert attempts == {"bounced": 1}


def test_release_all_at_shutdown(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry, unmatched_delay=60.0)
    processor.process_line(lines.SENT)
    processor.process_line(lines.DEFERRED)

    assert processor.release_all() == 2

    assert len(deliver_spans(telemetry)) == 2
    assert processor.pending_count == 0


def test_retry_then_expiry(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    parent = milter_span(telemetry)
    processor.register_message(QUEUE_ID, parent)

    for line in (
        lines.DEFERRED,
        lines.DEFERRED_RETRY,
        lines.EXPIRED,
        lines.EXPIRY_NOTIFICATION,
        lines.REMOVED,
    ):
        processor.process_line(line)

    first, retry, expired = deliver_spans(telemetry)
    assert dict(first.attributes or {})["smtp.delivery.delay.total"] == 0.03
    assert retry.parent is not None
    assert retry.parent.span_id == parent.span_id
    assert retry.end_time == AT_05_NS
    assert retry.start_time == AT_05_NS - 13_000_000_000
    assert expired.start_time == AT_05_NS
    assert expired.end_time == AT_05_NS
    assert expired.status.status_code is StatusCode.ERROR
    assert expired.status.description == "returned to sender"
    assert dict(expired.attributes or {}) == {
        "messaging.system": "smtp",
        "messaging.operation.type": "send",
        "smtp.queue_id": QUEUE_ID,
        "smtp.delivery.status": "expired",
        "smtp.delivery.transport": "qmgr",
        "error.type": "4.3.0",
    }
    assert QUEUE_ID not in processor.queue_map
    assert "5CA5320C006" in processor.queue_map
    notice_entry = processor.queue_map.get("5CA5320C006")
    assert notice_entry is not None
    assert retry.context is not None
    assert notice_entry.parent == retry.context


def test_expiry_without_earlier_dsn(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    processor.process_line(lines.EXPIRED)

    (span,) = deliver_spans(telemetry)
    assert dict(span.attributes or {})["error.type"] == "4.4.7"


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


def test_removed_forgets_queue_id(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    processor.process_line(lines.REMOVED)
    processor.process_line(lines.SENT)

    (span,) = deliver_spans(telemetry)
    assert span.parent is None


def test_attempt_metrics_with_exemplars(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    for line in (lines.DEFERRED, lines.BOUNCED, lines.SENT):
        processor.process_line(line)

    spans = {
        dict(span.attributes or {})["smtp.delivery.status"]: span
        for span in deliver_spans(telemetry)
    }
    points = metric_points(telemetry.metric_reader, "smtp.delivery.attempts")
    by_status = {
        point.attributes["smtp.delivery.status"]: dict(point.attributes) for point in points
    }
    assert by_status == {
        status: {
            "smtp.delivery.status": status,
            "smtp.response.enhanced_status_class": dsn_class,
            "server.address": "127.0.0.1",
            "smtp.delivery.transport": "smtp",
            "smtp.recipient.domain": "dest.example",
        }
        for status, dsn_class in (("sent", "2"), ("deferred", "4"), ("bounced", "5"))
    }
    for point in points:
        assert point.value == 1
        span = spans[point.attributes["smtp.delivery.status"]]
        assert span.context is not None
        assert [exemplar.span_id for exemplar in point.exemplars] == [span.context.span_id]
        assert [exemplar.trace_id for exemplar in point.exemplars] == [span.context.trace_id]


def test_delay_histogram_by_stage(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    processor.process_line(lines.DEFERRED_RETRY)

    points = metric_points(telemetry.metric_reader, "smtp.delivery.delay")
    sums = {point.attributes["smtp.delivery.delay.stage"]: point.sum for point in points}
    assert sums == {
        "before_queue_manager": 13.0,
        "in_queue_manager": 0.02,
        "connection_setup": 0.0,
        "transmission": 0.01,
        "total": 13.0,
    }
    assert {point.attributes["smtp.delivery.status"] for point in points} == {"deferred"}
    assert all(point.count == 1 for point in points)
    assert all(len(point.exemplars) == 1 for point in points)


def test_metric_without_recipient_domain(telemetry: Telemetry) -> None:
    delivery = DeliveryTelemetry(
        telemetry.tracer_provider, telemetry.meter_provider, recipient_domain_in_metrics=False
    )
    processor = DeliveryProcessor(QueueIdMap(), delivery, unmatched_delay=0.0)

    processor.process_line(lines.SENT)

    (point,) = metric_points(telemetry.metric_reader, "smtp.delivery.attempts")
    assert "smtp.recipient.domain" not in point.attributes


def test_line_results_counted(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)

    results = [
        processor.process_line(line)
        for line in (
            lines.SENT,
            lines.SMTPD_CONNECT,
            "garbage",
            lines.SENT.replace("delays=0.01/0.01/0/0.02", "delays=x"),
            "",
        )
    ]

    assert results == [
        LineResult.EVENT,
        LineResult.IGNORED,
        LineResult.UNKNOWN,
        LineResult.MALFORMED,
        LineResult.UNKNOWN,
    ]
    counts = counter_values(
        telemetry.metric_reader, "smtp.delivery.log_lines", "smtp.delivery.log_line.result"
    )
    assert counts == {"event": 1, "ignored": 1, "unknown": 2, "malformed": 1}


@pytest.mark.parametrize("queue_id", ["", "34DE520C0CD"])
def test_invalid_registration_ignored(telemetry: Telemetry, queue_id: str) -> None:
    processor = make_processor(telemetry)
    invalid = SpanContext(0, 0, is_remote=False)

    processor.register_message(queue_id, invalid)

    assert len(processor.queue_map) == 0


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


def test_recording_error_logged_once_per_minute(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    processor = make_processor(telemetry, clock=clock)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    def fail(*args: object) -> None:
        raise RuntimeError("exporter bug")

    monkeypatch.setattr(processor.telemetry, "record_attempt", fail)

    assert processor.process_line(lines.SENT) is LineResult.EVENT
    assert processor.process_line(lines.DEFERRED) is LineResult.EVENT
    clock.now += 60
    assert processor.process_line(lines.BOUNCED) is LineResult.EVENT

    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert [record.getMessage() for record in errors] == [
        f"Failed to record the delivery event of queue id {QUEUE_ID}",
        f"Failed to record the delivery event of queue id {QUEUE_ID} (1 similar errors not logged)",
    ]
    assert all(record.exc_info is not None for record in errors)


def test_pending_events_bounded(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "MAX_PENDING_EVENTS", 2)
    processor = make_processor(telemetry, unmatched_delay=3600.0)

    processor.process_line(lines.DEFERRED)
    processor.process_line(lines.CONNECTION_REFUSED)
    assert deliver_spans(telemetry) == []
    processor.process_line(lines.BOUNCED)

    # The oldest queue id's events were recorded as unmatched to make room.
    (span,) = deliver_spans(telemetry)
    assert dict(span.attributes or {})["smtp.delivery.status"] == "deferred"
    assert processor.pending_count == 2
