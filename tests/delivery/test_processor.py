"""Log lines to spans, joined to the milter's span by queue id."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from opentelemetry_instrumentation_smtp.milter.delivery.parser import LineResult
from tests.conftest import Telemetry
from tests.delivery import lines
from tests.delivery.helpers import (
    AT_05_NS,
    AT_52_NS,
    QUEUE_ID,
    FakeClock,
    by_status,
    deliver_spans,
    make_processor,
    milter_span,
)


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


def test_removed_forgets_queue_id(telemetry: Telemetry) -> None:
    processor = make_processor(telemetry)
    processor.register_message(QUEUE_ID, milter_span(telemetry))

    processor.process_line(lines.REMOVED)
    processor.process_line(lines.SENT)

    (span,) = deliver_spans(telemetry)
    assert span.parent is None


@pytest.mark.parametrize("queue_id", ["", "34DE520C0CD"])
def test_invalid_registration_ignored(telemetry: Telemetry, queue_id: str) -> None:
    processor = make_processor(telemetry)
    invalid = SpanContext(0, 0, is_remote=False)

    processor.register_message(queue_id, invalid)

    assert len(processor.queue_map) == 0


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
