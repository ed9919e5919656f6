"""Run the milter alone for the benchmarks: spans go through the bounded batch processor
to an exporter that drops them, and metrics go to the SDK's MeterProvider with no reader.

    python benchmarks/milter_server.py PORT

It prints ``ready`` on standard output once it listens, and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from opentelemetry_instrumentation_smtp.milter import MilterServer
from opentelemetry_instrumentation_smtp.milter.export import BoundedBatchSpanProcessor


class DroppingExporter(SpanExporter):
    """Counts and drops every span, so only the milter's and the SDK's work is measured."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


async def serve(port: int) -> None:
    exporter = DroppingExporter()
    meter_provider = MeterProvider()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BoundedBatchSpanProcessor(exporter, meter_provider=meter_provider)
    )
    server = MilterServer(
        [f"inet:127.0.0.1:{port}"], tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.close()
    tracer_provider.shutdown()
    print(f"exported {exporter.count} spans", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
