"""Spans and metrics for Postfix delivery attempts.

Each attempt becomes an ``smtp deliver`` span of kind CLIENT, because Postfix is the client
of the next hop. The span ends at the log line's time and starts ``delay`` seconds before
it, at the message's arrival in Postfix, so its duration is the time from send to this
attempt's end. The metrics are recorded in the span's context, so that an SDK with the
default trace-based exemplar filter attaches exemplars that point at the span.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
    get_tracer,
    set_span_in_context,
)

from opentelemetry_instrumentation_smtp import attributes as attrs
from opentelemetry_instrumentation_smtp.milter.delivery import names
from opentelemetry_instrumentation_smtp.milter.delivery.parser import (
    DeliveryAttempt,
    LineResult,
    MessageExpired,
    transport_of,
)
from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import QueueEntry
from opentelemetry_instrumentation_smtp.version import __version__

SPAN_NAME = "smtp deliver"
_INSTRUMENTATION_NAME = "opentelemetry_instrumentation_smtp.milter.delivery"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.30.0"

# Delivery delays run from milliseconds (a local relay) to the 5 days after which Postfix
# returns a message by default.
DELAY_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 2 * 86400.0, 5 * 86400.0,
)  # fmt: skip

# An expiry line carries no DSN. RFC 3463 code X.4.7 is "delivery time expired"; it is
# used when no earlier attempt of the message logged a DSN.
EXPIRED_FALLBACK_DSN = "4.4.7"

AttributeMap = dict[str, str | int | float | bool]


def _nanoseconds(timestamp: datetime) -> int:
    return int(timestamp.timestamp() * 1_000_000) * 1000


def recipient_domain(recipient: str) -> str | None:
    """Return the lower-cased domain of ``recipient``, or None when it has none."""
    local, at, domain = recipient.rpartition("@")
    if not at or not local or not domain:
        return None
    return domain.lower()


class DeliveryTelemetry:
    """Creates the delivery spans and records the delivery metrics."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        *,
        capture_addresses: bool = False,
        unmatched_spans: bool = True,
        recipient_domain_in_metrics: bool = True,
    ) -> None:
        self._tracer = get_tracer(
            _INSTRUMENTATION_NAME, __version__, tracer_provider, schema_url=_SCHEMA_URL
        )
        meter = get_meter(
            _INSTRUMENTATION_NAME, __version__, meter_provider, schema_url=_SCHEMA_URL
        )
        self.capture_addresses = capture_addresses
        self.unmatched_spans = unmatched_spans
        self.recipient_domain_in_metrics = recipient_domain_in_metrics

        self.attempts = meter.create_counter(
            names.METRIC_ATTEMPTS,
            unit="{attempt}",
            description="Postfix delivery attempts, by outcome, DSN class, relay and domain",
        )
        self.delay = meter.create_histogram(
            names.METRIC_DELAY,
            unit="s",
            description="Postfix delivery delay of each attempt, by stage",
            explicit_bucket_boundaries_advisory=DELAY_BUCKETS,
        )
        self.log_lines = meter.create_counter(
            names.METRIC_LOG_LINES,
            unit="{line}",
            description="Postfix log lines read, by what the parser made of them",
        )
        self.unmatched = meter.create_counter(
            names.METRIC_UNMATCHED,
            unit="{event}",
            description="Delivery events whose queue id the milter did not register",
        )
        self.evictions = meter.create_counter(
            names.METRIC_QUEUE_MAP_EVICTIONS,
            unit="{entry}",
            description="Queue id map entries dropped before Postfix logged their removal",
        )

    def count_line(self, result: LineResult | str) -> None:
        value = result.value if isinstance(result, LineResult) else result
        self.log_lines.add(1, {names.LOG_LINE_RESULT: value})

    def count_eviction(self, reason: str) -> None:
        self.evictions.add(1, {names.EVICTION_REASON: reason})

    def record_attempt(
        self, attempt: DeliveryAttempt, entry: QueueEntry | None
    ) -> SpanContext | None:
        """Create the span and metrics of one attempt.

        Returns the span's context, or None when no span was created because the queue id is
        unknown and unmatched lines are skipped.
        """
        attributes = self._attempt_attributes(attempt, entry)
        end_ns = _nanoseconds(attempt.timestamp)
        start_ns = end_ns - int(attempt.delay * 1e9)
        failed = attempt.status != "sent"
        error_type = attempt.dsn if failed else None
        return self._emit(
            entry, attributes, start_ns, end_ns, error_type, attempt.detail, self._delays(attempt)
        )

    def record_expired(
        self, expired: MessageExpired, entry: QueueEntry | None
    ) -> SpanContext | None:
        """Create the span and metrics for a message that expired in the queue.

        The span has no duration: the line marks the moment Postfix gave up.
        """
        attributes: AttributeMap = {
            attrs.MESSAGING_SYSTEM: attrs.MESSAGING_SYSTEM_SMTP,
            attrs.MESSAGING_OPERATION_TYPE: "send",
            attrs.SMTP_QUEUE_ID: expired.queue_id,
            names.DELIVERY_STATUS: "expired",
        }
        transport = transport_of(expired.program)
        if transport:
            attributes[names.DELIVERY_TRANSPORT] = transport
        self._add_handoff_attributes(attributes, expired.queue_id, entry)
        dsn = (entry.last_dsn if entry else None) or EXPIRED_FALLBACK_DSN
        at_ns = _nanoseconds(expired.timestamp)
        return self._emit(entry, attributes, at_ns, at_ns, dsn, "returned to sender", {})

    def _emit(
        self,
        entry: QueueEntry | None,
        attributes: AttributeMap,
        start_ns: int,
        end_ns: int,
        error_type: str | None,
        description: str | None,
        delays: Mapping[str, float],
    ) -> SpanContext | None:
        if error_type is not None:
            attributes[attrs.ERROR_TYPE] = error_type
        metric_attributes = self._metric_attributes(attributes)

        if entry is None:
            self.unmatched.add(1, {names.DELIVERY_STATUS: str(attributes[names.DELIVERY_STATUS])})
            if not self.unmatched_spans:
                self._record_metrics(metric_attributes, delays, None)
                return None
            # A new trace that links nothing: the message entered Postfix without the milter.
            parent_context = Context()
        else:
            parent_context = set_span_in_context(NonRecordingSpan(entry.parent), Context())

        span = self._tracer.start_span(
            SPAN_NAME,
            context=parent_context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start_ns,
        )
        if error_type is not None:
            text = description
            if text is not None and not self.capture_addresses:
                text = attrs.redact_addresses(text)
            span.set_status(Status(StatusCode.ERROR, text))
        self._record_metrics(metric_attributes, delays, set_span_in_context(span, Context()))
        span.end(end_time=end_ns)
        return span.get_span_context()

    def _record_metrics(
        self, attributes: AttributeMap, delays: Mapping[str, float], context: Context | None
    ) -> None:
        self.attempts.add(1, attributes, context=context)
        status = attributes[names.DELIVERY_STATUS]
        for stage, seconds in delays.items():
            point = {names.DELAY_STAGE: stage, names.DELIVERY_STATUS: status}
            self.delay.record(seconds, point, context=context)

    def _metric_attributes(self, attributes: AttributeMap) -> AttributeMap:
        keys = [names.DELIVERY_STATUS, attrs.SERVER_ADDRESS, names.DELIVERY_TRANSPORT]
        if self.recipient_domain_in_metrics:
            keys.append(names.RECIPIENT_DOMAIN)
        point = {key: attributes[key] for key in keys if key in attributes}
        dsn = attributes.get(attrs.SMTP_RESPONSE_ENHANCED_STATUS_CODE) or attributes.get(
            attrs.ERROR_TYPE
        )
        if isinstance(dsn, str) and dsn[:1] in ("2", "4", "5"):
            point[names.DSN_CLASS] = dsn[0]
        return point

    @staticmethod
    def _delays(attempt: DeliveryAttempt) -> dict[str, float]:
        return {
            names.STAGE_BEFORE_QUEUE_MANAGER: attempt.delays.before_queue_manager,
            names.STAGE_IN_QUEUE_MANAGER: attempt.delays.in_queue_manager,
            names.STAGE_CONNECTION_SETUP: attempt.delays.connection_setup,
            names.STAGE_TRANSMISSION: attempt.delays.transmission,
            names.STAGE_TOTAL: attempt.delay,
        }

    def _attempt_attributes(
        self, attempt: DeliveryAttempt, entry: QueueEntry | None
    ) -> AttributeMap:
        attributes: AttributeMap = {
            attrs.MESSAGING_SYSTEM: attrs.MESSAGING_SYSTEM_SMTP,
            attrs.MESSAGING_OPERATION_TYPE: "send",
            attrs.SMTP_QUEUE_ID: attempt.queue_id,
            names.DELIVERY_STATUS: attempt.status,
            attrs.SMTP_RESPONSE_ENHANCED_STATUS_CODE: attempt.dsn,
            names.DELIVERY_RELAY: attempt.relay.raw,
            names.DELAY_TOTAL: attempt.delay,
            names.DELAY_BEFORE_QUEUE_MANAGER: attempt.delays.before_queue_manager,
            names.DELAY_IN_QUEUE_MANAGER: attempt.delays.in_queue_manager,
            names.DELAY_CONNECTION_SETUP: attempt.delays.connection_setup,
            names.DELAY_TRANSMISSION: attempt.delays.transmission,
        }
        relay = attempt.relay
        if relay.host:
            attributes[attrs.SERVER_ADDRESS] = relay.host
        if relay.port is not None:
            attributes[attrs.SERVER_PORT] = relay.port
        if relay.address:
            attributes[attrs.NETWORK_PEER_ADDRESS] = relay.address

        domain = recipient_domain(attempt.recipient)
        if domain:
            attributes[names.RECIPIENT_DOMAIN] = domain
        if self.capture_addresses:
            attributes[attrs.SMTP_RECIPIENT_ADDRESS] = attempt.recipient
            if attempt.original_recipient:
                attributes[names.ORIGINAL_RECIPIENT_ADDRESS] = attempt.original_recipient

        reply = attempt.reply
        if reply is not None:
            attributes[attrs.SMTP_RESPONSE_STATUS_CODE] = reply.status_code
            text = reply.text if self.capture_addresses else attrs.redact_addresses(reply.text)
            if text:
                attributes[attrs.SMTP_RESPONSE_MESSAGE] = text
            if reply.command:
                attributes[names.DELIVERY_COMMAND] = reply.command
        elif attempt.detail:
            detail = attempt.detail
            attributes[names.DELIVERY_DETAIL] = (
                detail if self.capture_addresses else attrs.redact_addresses(detail)
            )
        if attempt.raw_status != attempt.status:
            attributes[names.DELIVERY_POSTFIX_STATUS] = attempt.raw_status
        if attempt.connection_use is not None:
            attributes[names.CONNECTION_USE] = attempt.connection_use
        transport = transport_of(attempt.program)
        if transport:
            attributes[names.DELIVERY_TRANSPORT] = transport
        self._add_handoff_attributes(attributes, attempt.queue_id, entry)
        return attributes

    @staticmethod
    def _add_handoff_attributes(
        attributes: AttributeMap, queue_id: str, entry: QueueEntry | None
    ) -> None:
        if entry is None or entry.handoff_from is None:
            return
        attributes[names.HANDOFF_FROM_QUEUE_ID] = entry.handoff_from
        if entry.handoff_kind:
            attributes[names.HANDOFF_KIND] = entry.handoff_kind
        if entry.origin_queue_id != queue_id:
            attributes[names.ORIGIN_QUEUE_ID] = entry.origin_queue_id
