"""Join parsed Postfix log events to the traces that the milter registered.

Events for a queue id that is not in the map yet wait up to ``unmatched_delay`` seconds,
because the line that registers the id can come later. Postfix may log a bounce notice's
delivery before the ``sender non-delivery notification: NEWQID`` line. The milter may
register a message after its first lines were read. Only after the delay is an event
recorded as unmatched.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo

from opentelemetry.trace import SpanContext

from opentelemetry_instrumentation_smtp.milter.delivery import names
from opentelemetry_instrumentation_smtp.milter.delivery.parser import (
    DeliveryAttempt,
    Event,
    LineResult,
    MessageExpired,
    MessageRemoved,
    QueueIdHandoff,
    parse_line,
)
from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import QueueEntry, QueueIdMap
from opentelemetry_instrumentation_smtp.milter.delivery.telemetry import DeliveryTelemetry

_logger = logging.getLogger(__name__)

DEFAULT_UNMATCHED_DELAY_SECONDS = 2.0
# Events that wait for their queue id, at most. Beyond it the oldest are recorded as
# unmatched at once, so that a flood of foreign lines cannot grow memory without bound.
MAX_PENDING_EVENTS = 10_000
# A bug that fails on every line logs once per interval, with the count of the others.
_ERROR_LOG_INTERVAL_SECONDS = 60.0


class DeliveryProcessor:
    """Parses log lines, keeps the queue id map and creates spans and metrics."""

    def __init__(
        self,
        queue_map: QueueIdMap,
        telemetry: DeliveryTelemetry,
        *,
        unmatched_delay: float = DEFAULT_UNMATCHED_DELAY_SECONDS,
        local_timezone: tzinfo | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.queue_map = queue_map
        self.telemetry = telemetry
        self.unmatched_delay = unmatched_delay
        self.local_timezone = local_timezone
        self._clock = clock
        self._wall_clock = wall_clock or (lambda: datetime.now(timezone.utc))
        # Queue id -> events that wait for it, oldest queue id first.
        self._pending: OrderedDict[str, list[tuple[float, Event]]] = OrderedDict()
        self._pending_count = 0
        self._last_error_log = -_ERROR_LOG_INTERVAL_SECONDS
        self._suppressed_errors = 0

    @property
    def pending_count(self) -> int:
        return self._pending_count

    def register_message(self, queue_id: str, span_context: SpanContext) -> None:
        """Record that the milter handled ``queue_id`` inside ``span_context``."""
        if not queue_id or not span_context.is_valid:
            return
        self.queue_map.add(queue_id, QueueEntry(parent=span_context, origin_queue_id=queue_id))
        self._release(queue_id)

    def process_line(self, line: str) -> LineResult:
        """Parse one log line and act on its event.

        Errors are logged at most once a minute, not raised. A line that the parser fails on
        counts as ``malformed``.
        """
        try:
            parsed = parse_line(line, now=self._wall_clock(), local_timezone=self.local_timezone)
        except Exception:  # a parser bug must not stop the follower
            self._log_error("Failed to parse a Postfix log line; skipping it")
            self.telemetry.count_line(LineResult.MALFORMED)
            return LineResult.MALFORMED
        self.telemetry.count_line(parsed.result)
        if parsed.event is not None:
            try:
                self.handle_event(parsed.event)
            except Exception:
                self._log_error(
                    f"Failed to record the delivery event of queue id {parsed.event.queue_id}"
                )
        return parsed.result

    def _log_error(self, message: str) -> None:
        """Log ``message`` with the current exception, at most once per interval."""
        now = self._clock()
        if now - self._last_error_log < _ERROR_LOG_INTERVAL_SECONDS:
            self._suppressed_errors += 1
            return
        if self._suppressed_errors:
            message += f" ({self._suppressed_errors} similar errors not logged)"
        _logger.exception(message)
        self._last_error_log = now
        self._suppressed_errors = 0

    def handle_event(self, event: Event) -> None:
        if isinstance(event, MessageRemoved):
            self.queue_map.remove(event.queue_id)
            return
        entry = self.queue_map.get(event.queue_id)
        if entry is None:
            self._hold(event)
            return
        self._apply(event, entry)

    def release_due(self, now: float | None = None) -> int:
        """Record the events that waited longer than ``unmatched_delay`` as unmatched."""
        if now is None:
            now = self._clock()
        released = 0
        while self._pending:
            queue_id, events = next(iter(self._pending.items()))
            if events[0][0] > now:
                break
            del self._pending[queue_id]
            self._pending_count -= len(events)
            for _, event in events:
                self._apply_unmatched(event)
                released += 1
        return released

    def release_all(self) -> int:
        """Record every waiting event as unmatched, for shutdown."""
        return self.release_due(float("inf"))

    def expire(self) -> None:
        self.queue_map.expire()

    def _hold(self, event: Event) -> None:
        if self.unmatched_delay <= 0:
            self._apply_unmatched(event)
            return
        while self._pending_count >= MAX_PENDING_EVENTS and self._pending:
            _, oldest = self._pending.popitem(last=False)
            self._pending_count -= len(oldest)
            for _, waiting in oldest:
                self._apply_unmatched(waiting)
        deadline = self._clock() + self.unmatched_delay
        self._pending.setdefault(event.queue_id, []).append((deadline, event))
        self._pending_count += 1

    def _release(self, queue_id: str) -> None:
        events = self._pending.pop(queue_id, None)
        if not events:
            return
        self._pending_count -= len(events)
        for _, event in events:
            self.handle_event(event)

    def _apply_unmatched(self, event: Event) -> None:
        if isinstance(event, DeliveryAttempt):
            self.telemetry.record_attempt(event, None)
        elif isinstance(event, MessageExpired):
            self.telemetry.record_expired(event, None)
        # A hand-off from an unknown queue id leads nowhere: nothing to record.

    def _apply(self, event: Event, entry: QueueEntry) -> None:
        if isinstance(event, DeliveryAttempt):
            span_context = self.telemetry.record_attempt(event, entry)
            if event.status == "sent":
                entry.last_success = span_context or entry.last_success
            else:
                entry.last_failure = span_context or entry.last_failure
                entry.last_dsn = event.dsn
            next_hop = event.next_hop_queue_id
            if next_hop and span_context is not None and next_hop not in self.queue_map:
                handoff = QueueEntry(
                    parent=span_context,
                    origin_queue_id=entry.origin_queue_id,
                    handoff_from=event.queue_id,
                    handoff_kind=names.HANDOFF_NEXT_HOP,
                )
                self.queue_map.add(next_hop, handoff, provisional=True)
                self._release(next_hop)
        elif isinstance(event, MessageExpired):
            self.telemetry.record_expired(event, entry)
        elif isinstance(event, QueueIdHandoff):
            # The notification belongs below the attempt that caused it: the bounced or
            # deferred attempt, or the successful one for a delivery status notification.
            success = "delivery status" in event.kind
            cause = entry.last_success if success else entry.last_failure
            notification = QueueEntry(
                parent=cause or entry.parent,
                origin_queue_id=entry.origin_queue_id,
                handoff_from=event.queue_id,
                handoff_kind=names.HANDOFF_NOTIFICATION,
            )
            self.queue_map.add(event.new_queue_id, notification)
            self._release(event.new_queue_id)
