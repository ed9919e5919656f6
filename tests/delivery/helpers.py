"""Helpers: a delivery processor on the test SDK, and reading what the SDK collected."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind

from opentelemetry_instrumentation_smtp.milter.delivery.processor import DeliveryProcessor
from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import QueueIdMap
from opentelemetry_instrumentation_smtp.milter.delivery.telemetry import DeliveryTelemetry
from tests.conftest import Telemetry


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Return the data points of metric ``name``, or [] when it has none."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    points: list[Any] = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


def counter_values(reader: InMemoryMetricReader, name: str, key: str) -> dict[Any, float]:
    """Return a counter's values by the value of attribute ``key``."""
    return {dict(point.attributes).get(key): point.value for point in metric_points(reader, name)}


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
