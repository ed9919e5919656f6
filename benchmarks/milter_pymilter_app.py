"""A minimal pymilter milter doing the milter benchmark's work, for comparison only.

pymilter is GPL and needs libmilter, so it is never a dependency of this project. Run it
from a separate virtual environment, as docs/benchmarks.md describes::

    /tmp/pymilter-venv/bin/python benchmarks/milter_pymilter_app.py PORT

Like the project's milter, it records one span per message, parented by the message's
traceparent, with the queue id, client address, recipient count, size and Message-ID,
through a batch span processor to an exporter that drops the spans.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import Milter  # type: ignore[import-not-found]
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


class DroppingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


PROVIDER = TracerProvider()
PROVIDER.add_span_processor(BatchSpanProcessor(DroppingExporter()))
TRACER = PROVIDER.get_tracer("pymilter-benchmark")
PROPAGATOR = TraceContextTextMapPropagator()


class TracingMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self) -> None:
        self.client = ""
        self.start = 0
        self.recipients = 0
        self.size = 0
        self.headers: dict[str, str] = {}

    @Milter.noreply  # type: ignore[misc]
    def connect(self, hostname: str, family: int, hostaddr: tuple[str, int]) -> int:
        self.client = str(hostaddr[0]) if hostaddr else ""
        return Milter.CONTINUE

    @Milter.noreply  # type: ignore[misc]
    def hello(self, name: str) -> int:
        return Milter.CONTINUE

    @Milter.noreply  # type: ignore[misc]
    def envfrom(self, sender: str, *parameters: str) -> int:
        self.start = time.time_ns()
        self.recipients = 0
        self.size = 0
        self.headers = {}
        return Milter.CONTINUE

    @Milter.noreply  # type: ignore[misc]
    def envrcpt(self, recipient: str, *parameters: str) -> int:
        self.recipients += 1
        return Milter.CONTINUE

    @Milter.noreply  # type: ignore[misc]
    def header(self, name: str, value: str) -> int:
        self.headers.setdefault(name.lower(), value.strip())
        self.size += len(name) + len(value) + 4
        return Milter.CONTINUE

    @Milter.noreply  # type: ignore[misc]
    def eoh(self) -> int:
        return Milter.CONTINUE

    @Milter.noreply  # type: ignore[misc]
    def body(self, chunk: bytes) -> int:
        self.size += len(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        context = PROPAGATOR.extract(self.headers)
        span = TRACER.start_span(
            "smtp receive", context=context, kind=SpanKind.SERVER, start_time=self.start
        )
        span.set_attributes(
            {
                "client.address": self.client,
                "smtp.queue_id": self.getsymval("i") or "",
                "smtp.recipients.count": self.recipients,
                "smtp.message.size": self.size,
                "messaging.message.id": self.headers.get("message-id", ""),
            }
        )
        span.end()
        return Milter.CONTINUE


if __name__ == "__main__":
    Milter.factory = TracingMilter
    print("ready", flush=True)
    Milter.runmilter("benchmark", f"inet:{sys.argv[1]}@127.0.0.1", 60)
