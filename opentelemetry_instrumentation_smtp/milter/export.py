"""A batch span processor whose queue is bounded and whose drops are counted.

Ending a span only appends it to a queue under a lock, so an exporter that is down or
slow never delays a reply to the MTA. When the queue is full the span is dropped, counted
in ``smtp.milter.spans.dropped`` and reported in a log line at most once a minute.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from opentelemetry_instrumentation_smtp.version import __version__

_logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_SIZE = 8192
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_SCHEDULE_DELAY = 1.0
DROP_LOG_INTERVAL = 60.0
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

# error.type values of dropped spans.
DROPPED_QUEUE_FULL = "queue_full"
DROPPED_EXPORT_FAILED = "export_failed"


class RateLimitedCounter:
    """Counts events and logs a warning about them at most once per ``interval`` seconds."""

    def __init__(self, text: str, interval: float = DROP_LOG_INTERVAL) -> None:
        self._text = text
        self._interval = interval
        self._pending = 0
        self._last_log = -interval
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        """Count ``count`` more events, and log the sum if the interval has passed."""
        now = time.monotonic()
        with self._lock:
            self._pending += count
            if now - self._last_log < self._interval:
                return
            pending, self._pending, self._last_log = self._pending, 0, now
        _logger.warning(self._text, pending)


class BoundedBatchSpanProcessor(SpanProcessor):
    """Exports sampled spans in batches from a background thread.

    ``max_queue_size`` spans wait at most; more are dropped. A batch goes out when
    ``max_export_batch_size`` spans are queued or every ``schedule_delay`` seconds.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        schedule_delay: float = DEFAULT_SCHEDULE_DELAY,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._exporter = exporter
        self._max_queue_size = max_queue_size
        self._batch_size = max_export_batch_size
        self._schedule_delay = schedule_delay
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flushed = threading.Condition(self._lock)
        self._exporting = False
        self._stopped = False
        self.shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT
        meter = metrics.get_meter(__name__, __version__, meter_provider)
        self._dropped = meter.create_counter(
            "smtp.milter.spans.dropped",
            unit="{span}",
            description="Spans dropped because the export queue was full or the export failed.",
        )
        self._queue_full_log = RateLimitedCounter(
            "span export queue is full: dropped %d spans; check that the exporter's endpoint is up"
        )
        self._failed_log = RateLimitedCounter(
            "span export failed: dropped %d spans; check the exporter's endpoint and credentials"
        )
        self._thread = threading.Thread(
            target=self._run, name="smtp-milter-span-export", daemon=True
        )
        self._thread.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Do nothing: spans are queued when they end."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span for export, or count it as dropped if the queue is full."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        with self._lock:
            if self._stopped:
                return
            if len(self._queue) >= self._max_queue_size:
                full = True
            else:
                full = False
                self._queue.append(span)
                if len(self._queue) >= self._batch_size:
                    self._wake.set()
        if full:
            self._dropped.add(1, {"error.type": DROPPED_QUEUE_FULL})
            self._queue_full_log.add(1)

    def _take_batch(self) -> list[ReadableSpan]:
        with self._lock:
            count = min(self._batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._exporting = bool(batch)
            return batch

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self._exporter.export(batch)
        except Exception:
            _logger.exception("span exporter raised; dropping %d spans", len(batch))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._dropped.add(len(batch), {"error.type": DROPPED_EXPORT_FAILED})
            self._failed_log.add(len(batch))

    def _run(self) -> None:
        while True:
            self._wake.wait(self._schedule_delay)
            self._wake.clear()
            while batch := self._take_batch():
                self._export(batch)
            with self._lock:
                self._exporting = False
                self._flushed.notify_all()
                if self._stopped:
                    return

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every queued span; return ``False`` if that took over the timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            while self._queue or self._exporting:
                self._wake.set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flushed.wait(min(remaining, 0.1))
        return True

    def shutdown(self) -> None:
        """Export what is queued, stop the thread and shut the exporter down."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._wake.set()
        self._thread.join(self.shutdown_timeout)
        if self._thread.is_alive():
            _logger.warning(
                "span export did not finish within %.0f s of shutdown; queued spans are lost",
                self.shutdown_timeout,
            )
            return
        self._exporter.shutdown()
