"""Lines whose queue id the milter did not register: waiting, new traces, skipping."""

from __future__ import annotations

import pytest

from opentelemetry_instrumentation_smtp.milter.delivery import processor as processor_module
from tests.conftest import Telemetry
from tests.delivery import lines
from tests.delivery.helpers import (
    QUEUE_ID,
    FakeClock,
    counter_values,
    deliver_spans,
    make_processor,
    milter_span,
)


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
