"""The running follower: reads the log, feeds the processor, sweeps the map."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanContext, TracerProvider

from opentelemetry_instrumentation_smtp.milter.delivery.follower import LogFollower
from opentelemetry_instrumentation_smtp.milter.delivery.prefix import load_timezone
from opentelemetry_instrumentation_smtp.milter.delivery.processor import DeliveryProcessor
from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import QueueIdMap
from opentelemetry_instrumentation_smtp.milter.delivery.telemetry import DeliveryTelemetry

_logger = logging.getLogger(__name__)

# How often waiting events are released and old map entries dropped, at most.
_SWEEP_INTERVAL_SECONDS = 1.0
# Lines processed between two yields to the event loop. Fifty delivery lines with spans and
# metrics took about 6 ms with CPython 3.11 on one x86-64 core.
_LINES_PER_YIELD = 50


class DeliveryService:
    """Owns the follower and the processor for one milter process."""

    def __init__(self, follower: LogFollower, processor: DeliveryProcessor) -> None:
        self.follower = follower
        self.processor = processor
        self._closed = False

    @classmethod
    def from_arguments(
        cls,
        args: argparse.Namespace,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> DeliveryService:
        # The milter's opt-in for personal data; both spellings of the flag are accepted.
        capture_addresses = bool(
            getattr(args, "capture_addresses", False) or getattr(args, "record_addresses", False)
        )
        telemetry = DeliveryTelemetry(
            tracer_provider,
            meter_provider,
            capture_addresses=capture_addresses,
            unmatched_spans=getattr(args, "unmatched", "span") == "span",
            recipient_domain_in_metrics=bool(getattr(args, "metric_recipient_domain", True)),
        )
        queue_map = QueueIdMap(
            max_entries=args.queue_map_size,
            ttl=args.queue_map_ttl,
            handoff_ttl=args.handoff_ttl,
            on_evict=telemetry.count_eviction,
        )
        processor = DeliveryProcessor(
            queue_map,
            telemetry,
            unmatched_delay=args.unmatched_delay,
            local_timezone=load_timezone(getattr(args, "postfix_log_timezone", None)),
        )
        follower = LogFollower(
            args.postfix_log,
            from_start=bool(args.postfix_log_from_start),
            poll_interval=args.postfix_log_poll_interval,
            on_too_long=lambda: telemetry.count_line("too_long"),
        )
        return cls(follower, processor)

    def on_message_done(self, queue_id: str, span_context: SpanContext) -> None:
        """Register one message that the milter handled. Errors are logged, not raised."""
        try:
            self.processor.register_message(queue_id, span_context)
        except Exception:
            _logger.exception("Failed to register queue id %s for delivery spans", queue_id)

    def coroutines(self) -> list[Coroutine[Any, Any, None]]:
        return [self.follow(), self.sweep()]

    async def follow(self) -> None:
        """Read log lines until cancelled, or until standard input closes."""
        _logger.info("Postfix log follower started on %s", self.follower.path)
        try:
            processed = 0
            async for line in self.follower.lines():
                self.processor.process_line(line)
                processed += 1
                # A backlog arrives in 64 KiB chunks without an await between their lines.
                # Yield now and then so that milter connections are not kept waiting.
                if processed % _LINES_PER_YIELD == 0:
                    await asyncio.sleep(0)
        finally:
            _logger.info("Postfix log follower stopped on %s", self.follower.path)

    async def sweep(self) -> None:
        """Release waiting events and drop expired map entries, until cancelled."""
        interval = min(_SWEEP_INTERVAL_SECONDS, max(self.processor.unmatched_delay / 2, 0.05))
        while True:
            await asyncio.sleep(interval)
            try:
                self.processor.release_due()
                self.processor.expire()
            except Exception:
                _logger.exception("Failed to sweep the Postfix queue id map")

    async def close(self) -> None:
        """Record the events that still wait for their queue id, as unmatched."""
        if self._closed:
            return
        self._closed = True
        released = self.processor.release_all()
        if released:
            _logger.info("Recorded %d waiting delivery events as unmatched at shutdown", released)
