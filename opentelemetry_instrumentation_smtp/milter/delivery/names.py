"""Attribute and metric names that only the delivery spans use, listed in
docs/postfix-delivery.md. Shared names come from ``opentelemetry_instrumentation_smtp.attributes``.
"""

from __future__ import annotations

# Span attributes.
DELIVERY_STATUS = "smtp.delivery.status"
DELIVERY_POSTFIX_STATUS = "smtp.delivery.postfix_status"
DELIVERY_RELAY = "smtp.delivery.relay"
DELIVERY_TRANSPORT = "smtp.delivery.transport"
DELIVERY_COMMAND = "smtp.delivery.command"
DELIVERY_DETAIL = "smtp.delivery.detail"
CONNECTION_USE = "smtp.delivery.connection_use"
RECIPIENT_DOMAIN = "smtp.recipient.domain"
ORIGINAL_RECIPIENT_ADDRESS = "smtp.recipient.original_address"
HANDOFF_FROM_QUEUE_ID = "smtp.delivery.handoff.from_queue_id"
HANDOFF_KIND = "smtp.delivery.handoff.kind"
ORIGIN_QUEUE_ID = "smtp.delivery.origin_queue_id"

DELAY_TOTAL = "smtp.delivery.delay.total"
DELAY_BEFORE_QUEUE_MANAGER = "smtp.delivery.delay.before_queue_manager"
DELAY_IN_QUEUE_MANAGER = "smtp.delivery.delay.in_queue_manager"
DELAY_CONNECTION_SETUP = "smtp.delivery.delay.connection_setup"
DELAY_TRANSMISSION = "smtp.delivery.delay.transmission"

# Metric attributes.
DSN_CLASS = "smtp.response.enhanced_status_class"
DELAY_STAGE = "smtp.delivery.delay.stage"
LOG_LINE_RESULT = "smtp.delivery.log_line.result"
EVICTION_REASON = "smtp.delivery.queue_map.eviction_reason"

STAGE_BEFORE_QUEUE_MANAGER = "before_queue_manager"
STAGE_IN_QUEUE_MANAGER = "in_queue_manager"
STAGE_CONNECTION_SETUP = "connection_setup"
STAGE_TRANSMISSION = "transmission"
STAGE_TOTAL = "total"

# Hand-off kinds.
HANDOFF_NOTIFICATION = "notification"
HANDOFF_NEXT_HOP = "next_hop"

# Metrics.
METRIC_ATTEMPTS = "smtp.delivery.attempts"
METRIC_DELAY = "smtp.delivery.delay"
METRIC_LOG_LINES = "smtp.delivery.log_lines"
METRIC_UNMATCHED = "smtp.delivery.unmatched"
METRIC_QUEUE_MAP_EVICTIONS = "smtp.delivery.queue_map.evictions"
