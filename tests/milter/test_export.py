"""The bounded batch span processor: never blocks, counts and logs what it drops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from opentelemetry_instrumentation_smtp.milter.export import BoundedBatchSpanProcessor
from tests.conftest import Telemetry

from .test_server import metric_points


class GatedExporter(SpanExporter):
    """Blocks every export until the gate opens, then returns ``result``."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.gate = threading.Event()
        self.result = result
        self.exported: list[str] = []
        self.shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.wait()
        self.exported.extend(span.name for span in spans)
        return self.result

    def shutdown(self) -> None:
        self.shut_down = True


def end_spans(processor: BoundedBatchSpanProcessor, count: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for number in range(count):
        tracer.start_span(f"span {number}").end()


def test_full_queue_drops_and_counts(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = GatedExporter()
    processor = BoundedBatchSpanProcessor(
        exporter,
        max_queue_size=2,
        max_export_batch_size=100,
        schedule_delay=3600,
        meter_provider=telemetry.meter_provider,
    )
    end_spans(processor, 5)
    (point,) = metric_points(telemetry, "smtp.milter.spans.dropped")
    assert (point.value, dict(point.attributes)) == (3, {"error.type": "queue_full"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The first drop is logged at once; the next ones wait for the next interval.
    assert warnings == [
        "span export queue is full: dropped 1 spans; check that the exporter's endpoint is up"
    ]
    exporter.gate.set()
    assert processor.force_flush(10_000)
    assert exporter.exported == ["span 0", "span 1"]
    processor.shutdown()
    assert exporter.shut_down


def test_failed_export_is_counted(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    exporter = GatedExporter(SpanExportResult.FAILURE)
    exporter.gate.set()
    processor = BoundedBatchSpanProcessor(
        exporter, schedule_delay=3600, meter_provider=telemetry.meter_provider
    )
    end_spans(processor, 3)
    assert processor.force_flush(10_000)
    (point,) = metric_points(telemetry, "smtp.milter.spans.dropped")
    assert (point.value, dict(point.attributes)) == (3, {"error.type": "export_failed"})
    assert "span export failed: dropped 3 spans" in caplog.text
    processor.shutdown()


def test_unsampled_spans_are_not_queued() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = GatedExporter()
    exporter.gate.set()
    processor = BoundedBatchSpanProcessor(exporter, schedule_delay=3600)
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(processor)
    provider.get_tracer("test").start_span("unsampled").end()
    assert processor.force_flush(10_000)
    assert exporter.exported == []
    processor.shutdown()


def test_shutdown_gives_up_on_hung_exporter(caplog: pytest.LogCaptureFixture) -> None:
    exporter = GatedExporter()
    processor = BoundedBatchSpanProcessor(exporter, max_export_batch_size=1, schedule_delay=3600)
    processor.shutdown_timeout = 0.1
    end_spans(processor, 1)
    assert not processor.force_flush(100)
    processor.shutdown()
    assert "span export did not finish within 0 s of shutdown" in caplog.text
    assert not exporter.shut_down
    exporter.gate.set()
