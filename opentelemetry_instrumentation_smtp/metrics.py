"""Client metrics: send duration, messages sent, recipients by reply code, message size.

No metric attribute carries an address, a subject, a Message-ID, a queue id or reply
text: only the values listed in docs/metrics.md, which all have a small set of values.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.metrics import Meter, MeterProvider, get_meter

from opentelemetry_instrumentation_smtp import attributes as attrs
from opentelemetry_instrumentation_smtp.version import __version__

SEND_DURATION = "messaging.client.operation.duration"
SENT_MESSAGES = "messaging.client.sent.messages"
RECIPIENTS = "smtp.client.recipients"
MESSAGE_SIZE = "smtp.client.message.size"

# From a fast local relay (a few ms) to a slow remote server near common client
# timeouts (60 s).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From 1 KiB to 50 MiB, the size limit of most large providers.
SIZE_BUCKETS = tuple(float(1024 * 4**n) for n in range(10)) + (50.0 * 1024 * 1024,)

RECIPIENT_ACCEPTED = "accepted"
RECIPIENT_REFUSED = "refused"

# The span attributes that are copied into the duration and message-count points.
_SEND_ATTRIBUTE_KEYS = (
    attrs.MESSAGING_SYSTEM,
    attrs.MESSAGING_OPERATION_NAME,
    attrs.MESSAGING_OPERATION_TYPE,
    attrs.SERVER_ADDRESS,
    attrs.SERVER_PORT,
    attrs.NETWORK_PROTOCOL_NAME,
    attrs.SMTP_RESPONSE_STATUS_CODE,
    attrs.ERROR_TYPE,
)

AttributeValues = Mapping[str, str | int | bool]


class ClientMetrics:
    """The client instruments, created from one meter."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram(
            SEND_DURATION,
            unit="s",
            description="Duration of sending one message, from MAIL FROM to the reply to DATA",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.sent_messages = meter.create_counter(
            SENT_MESSAGES,
            unit="{message}",
            description="Messages that the client attempted to send",
        )
        self.recipients = meter.create_counter(
            RECIPIENTS,
            unit="{recipient}",
            description="Recipients given in RCPT commands, by the server's reply",
        )
        self.message_size = meter.create_histogram(
            MESSAGE_SIZE,
            unit="By",
            description="Size of the message as sent in DATA, inserted header lines included",
            explicit_bucket_boundaries_advisory=SIZE_BUCKETS,
        )

    @classmethod
    def from_provider(cls, meter_provider: MeterProvider | None) -> ClientMetrics:
        meter = get_meter(
            "opentelemetry_instrumentation_smtp",
            __version__,
            meter_provider,
            schema_url="https://opentelemetry.io/schemas/1.30.0",
        )
        return cls(meter)

    def record_send(
        self,
        duration_s: float,
        span_attributes: AttributeValues,
        context: Context | None,
    ) -> None:
        """Record one send attempt with the low-cardinality subset of its span attributes."""
        point = {key: span_attributes[key] for key in _SEND_ATTRIBUTE_KEYS if key in span_attributes}
        self.duration.record(duration_s, point, context=context)
        self.sent_messages.add(1, point, context=context)

    def record_recipient(
        self,
        accepted: bool,
        status_code: int | None,
        server_address: str | None,
        context: Context | None,
    ) -> None:
        point: dict[str, str | int] = {
            attrs.SMTP_RECIPIENT_STATUS: RECIPIENT_ACCEPTED if accepted else RECIPIENT_REFUSED
        }
        if status_code is not None:
            point[attrs.SMTP_RESPONSE_STATUS_CODE] = status_code
        if server_address:
            point[attrs.SERVER_ADDRESS] = server_address
        self.recipients.add(1, point, context=context)

    def record_size(
        self, size: int, span_attributes: AttributeValues, context: Context | None
    ) -> None:
        point = {
            key: span_attributes[key]
            for key in (attrs.MESSAGING_SYSTEM, attrs.SERVER_ADDRESS, attrs.NETWORK_PROTOCOL_NAME)
            if key in span_attributes
        }
        self.message_size.record(size, point, context=context)
