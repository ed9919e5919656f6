"""Delivery metrics: attempts, delays by stage, exemplars and line counts."""

from __future__ import annotations

from opentelemetry_instrumentation_smtp.milter.delivery.parser import LineResult
from opentelemetry_instrumentation_smtp.milter.delivery.processor import DeliveryProcessor
from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import QueueIdMap
from opentelemetry_instrumentation_smtp.milter.delivery.telemetry import DeliveryTelemetry
from tests.conftest import Telemetry
from tests.delivery import lines
from tests.delivery.helpers import (
    QUEUE_ID,
    counter_values,
    deliver_spans,
    make_processor,
    metric_points,
    milter_span,
)


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
