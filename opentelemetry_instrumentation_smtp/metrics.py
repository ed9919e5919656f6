"""Client metrics: send duration, messages sent, recipients by reply code, message size.

No metric attribute carries an address, a subject, a Message-ID, a queue id or reply
text. The attributes are the ones listed in docs/metrics.md, and each has few values:
the server, the protocol, the three-digit reply code and ``error.type``.

Every point is recorded with the send span's context, so an SDK with exemplars enabled
(the default ``trace_based`` exemplar filter) links the point to the send span when the
span is sampled. A failing meter never fails a send: its errors are reported and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.metrics import Meter, MeterProvider, get_meter

from opentelemetry_instrumentation_smtp import attributes as attrs
from opentelemetry_instrumentation_smtp._diagnostics import report
from opentelemetry_instrumentation_smtp.version import __version__

SEND_DURATION = "messaging.client.operation.duration"
SENT_MESSAGES = "messaging.client.sent.messages"
RECIPIENTS = "smtp.client.recipients"
MESSAGE_SIZE = "smtp.client.message.size"

_SCHEMA_URL = "https://opentelemetry.io/schemas/1.30.0"

# Seconds, from a relay on the same host (a few ms) to a slow remote server close to the
# usual client timeouts (60 s).
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

_KIB = 1024
_MIB = 1024 * 1024
# Bytes, from a short text message (1 KiB) to 50 MiB. The 10 MiB bucket sits just above
# Postfix's default message_size_limit (10240000 bytes).
SIZE_BUCKETS = (
    1.0 * _KIB,
    4.0 * _KIB,
    16.0 * _KIB,
    64.0 * _KIB,
    256.0 * _KIB,
    1.0 * _MIB,
    4.0 * _MIB,
    10.0 * _MIB,
    25.0 * _MIB,
    50.0 * _MIB,
)

RECIPIENT_ACCEPTED = "accepted"
RECIPIENT_REFUSED = "refused"

# The span attributes that are copied into the duration and message-count points.
SEND_ATTRIBUTE_KEYS = (
    attrs.MESSAGING_SYSTEM,
    attrs.MESSAGING_OPERATION_NAME,
    attrs.MESSAGING_OPERATION_TYPE,
    attrs.SERVER_ADDRESS,
    attrs.SERVER_PORT,
    attrs.NETWORK_PROTOCOL_NAME,
    attrs.SMTP_RESPONSE_STATUS_CODE,
    attrs.ERROR_TYPE,
)

# The span attributes that are copied into the message-size points.
SIZE_ATTRIBUTE_KEYS = (
    attrs.MESSAGING_SYSTEM,
    attrs.SERVER_ADDRESS,
    attrs.NETWORK_PROTOCOL_NAME,
)

AttributeValues = Mapping[str, object]
PointAttributes = dict[str, str | int]


def _select(span_attributes: AttributeValues, keys: tuple[str, ...]) -> PointAttributes:
    point: PointAttributes = {}
    for key in keys:
        value = span_attributes.get(key)
        # bool is an int too, but none of the selected attributes is a bool.
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            point[key] = value
    return point


class ClientMetrics:
    """The four client instruments, created from one meter."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram(
            SEND_DURATION,
            unit="s",
            description="Duration of sending one message, from the send call to the reply to DATA",
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
        """Create the instruments from ``meter_provider``, or from the global provider."""
        meter = get_meter(
            "opentelemetry_instrumentation_smtp",
            __version__,
            meter_provider,
            schema_url=_SCHEMA_URL,
        )
        return cls(meter)

    def record_send(
        self,
        duration_s: float,
        span_attributes: AttributeValues,
        context: Context | None,
    ) -> None:
        """Record one send attempt with the low-cardinality subset of its span attributes."""
        point = _select(span_attributes, SEND_ATTRIBUTE_KEYS)
        try:
            self.duration.record(duration_s, point, context=context)
            self.sent_messages.add(1, point, context=context)
        except Exception as exc:
            report("recording the send metrics", exc)

    def record_recipient(
        self,
        accepted: bool,
        status_code: int | None,
        server_address: str | None,
        context: Context | None,
    ) -> None:
        """Count one RCPT by its outcome.

        ``status_code`` is None when the RCPT got no reply, for example because the
        connection was lost. The recipient then counts as refused without a code.
        """
        point: PointAttributes = {
            attrs.SMTP_RECIPIENT_STATUS: RECIPIENT_ACCEPTED if accepted else RECIPIENT_REFUSED
        }
        if status_code is not None:
            point[attrs.SMTP_RESPONSE_STATUS_CODE] = status_code
        if server_address:
            point[attrs.SERVER_ADDRESS] = server_address
        try:
            self.recipients.add(1, point, context=context)
        except Exception as exc:
            report("recording the recipient metric", exc)

    def record_size(
        self, size: int, span_attributes: AttributeValues, context: Context | None
    ) -> None:
        """Record the bytes handed to DATA, inserted header lines included."""
        point = _select(span_attributes, SIZE_ATTRIBUTE_KEYS)
        try:
            self.message_size.record(size, point, context=context)
        except Exception as exc:
            report("recording the message size metric", exc)
