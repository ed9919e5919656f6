"""Client metrics read through the SDK's InMemoryMetricReader after real sends.

Every test sends to the RecordingServer on 127.0.0.1, with smtplib and with aiosmtplib
(skipped while the aiosmtplib adapter wraps nothing).
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import (
    Counter,
    Histogram,
    Meter,
    NoOpCounter,
    NoOpHistogram,
    NoOpMeter,
    NoOpMeterProvider,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NoOpTracerProvider

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.smtpserver import POSTFIX_QUEUED, RecordingServer

DURATION = "messaging.client.operation.duration"
SENT = "messaging.client.sent.messages"
RECIPIENTS = "smtp.client.recipients"
SIZE = "smtp.client.message.size"

SENDER = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
SUBJECT = "Quarterly numbers for the board"
MESSAGE_ID = "<report-5517@example.test>"
QUEUE_ID = "4Xb1Kq0cZ5z9v"
USER_UNKNOWN = "550 5.1.1 <carol@example.test>: Recipient address rejected: User unknown"
MESSAGE = (
    f"From: {SENDER}\r\nTo: {BOB}\r\nSubject: {SUBJECT}\r\nMessage-ID: {MESSAGE_ID}\r\n"
    "\r\nThe numbers are attached.\r\n"
).encode()

Sender = Callable[[int, str, Sequence[str], bytes], None]
PointKey = frozenset[tuple[str, Any]]


def _send_smtplib(port: int, sender: str, recipients: Sequence[str], message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail(sender, list(recipients), message)


def _send_aiosmtplib(port: int, sender: str, recipients: Sequence[str], message: bytes) -> None:
    import aiosmtplib

    async def send() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.sendmail(sender, list(recipients), message)

    asyncio.run(send())


SENDERS: dict[str, Sender] = {"smtplib": _send_smtplib, "aiosmtplib": _send_aiosmtplib}
DISCONNECTED: dict[str, str] = {
    "smtplib": "smtplib.SMTPServerDisconnected",
    "aiosmtplib": "aiosmtplib.errors.SMTPServerDisconnected",
}


@pytest.fixture(scope="session")
def aiosmtplib_adapter() -> bool:
    """Tell whether instrument() wraps aiosmtplib in this checkout."""
    import aiosmtplib

    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(
        tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
    )
    try:
        return hasattr(aiosmtplib.SMTP.sendmail, "__wrapped__")
    finally:
        instrumentor.uninstrument()


@pytest.fixture(params=sorted(SENDERS))
def library(request: pytest.FixtureRequest, aiosmtplib_adapter: bool) -> str:
    name: str = request.param
    if name == "aiosmtplib" and not aiosmtplib_adapter:
        pytest.skip("the aiosmtplib adapter wraps nothing yet")
    return name


@contextmanager
def instrumented(**kwargs: Any) -> Iterator[None]:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(**kwargs)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """Collect this package's metrics once: each collection resets the exemplars."""
    data = reader.get_metrics_data()
    found: dict[str, Metric] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != "opentelemetry_instrumentation_smtp":
                continue
            for metric in scope_metrics.metrics:
                found[metric.name] = metric
    return found


def points(found: dict[str, Metric], name: str) -> dict[PointKey, Any]:
    """Return the data points of one metric, keyed by their attribute items."""
    metric = found.get(name)
    if metric is None:
        return {}
    return {frozenset((p.attributes or {}).items()): p for p in metric.data.data_points}


def send_attributes(port: int, library: str, code: int, error: str | None = None) -> PointKey:
    expected: dict[str, Any] = {
        "messaging.system": "smtp",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "server.address": "127.0.0.1",
        "server.port": port,
        "network.protocol.name": "smtp",
    }
    if code:
        expected["smtp.response.status_code"] = code
    if error is not None:
        expected["error.type"] = error
    return frozenset(expected.items())


def recipient_attributes(status: str, code: int | None) -> PointKey:
    expected: dict[str, Any] = {"smtp.recipient.status": status, "server.address": "127.0.0.1"}
    if code is not None:
        expected["smtp.response.status_code"] = code
    return frozenset(expected.items())


SIZE_ATTRIBUTES = frozenset(
    {
        "messaging.system": "smtp",
        "server.address": "127.0.0.1",
        "network.protocol.name": "smtp",
    }.items()
)


def assert_one_send(found: dict[str, Metric], attributes: PointKey) -> None:
    durations = points(found, DURATION)
    assert list(durations) == [attributes]
    assert durations[attributes].count == 1
    assert durations[attributes].sum > 0
    sent = points(found, SENT)
    assert list(sent) == [attributes]
    assert sent[attributes].value == 1


def test_success_records_all_instruments(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer, library: str
) -> None:
    SENDERS[library](server.port, SENDER, [BOB], MESSAGE)

    found = collect(telemetry.metric_reader)
    assert_one_send(found, send_attributes(server.port, library, 250))
    recipients = points(found, RECIPIENTS)
    assert list(recipients) == [recipient_attributes("accepted", 250)]
    assert recipients[recipient_attributes("accepted", 250)].value == 1
    sizes = points(found, SIZE)
    assert list(sizes) == [SIZE_ATTRIBUTES]
    assert sizes[SIZE_ATTRIBUTES].count == 1
    # The recorded size is the DATA as sent, so it covers the inserted traceparent line.
    received = server.messages[-1].content
    assert received.startswith(b"traceparent: 00-")
    assert sizes[SIZE_ATTRIBUTES].sum == len(received)
    span = telemetry.one_span("smtp send")
    assert span.attributes is not None
    assert sizes[SIZE_ATTRIBUTES].sum == span.attributes["smtp.message.size"]


def test_instrument_units_and_buckets(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer
) -> None:
    _send_smtplib(server.port, SENDER, [BOB], MESSAGE)

    found = collect(telemetry.metric_reader)
    assert {name: metric.unit for name, metric in found.items()} == {
        DURATION: "s",
        SENT: "{message}",
        RECIPIENTS: "{recipient}",
        SIZE: "By",
    }
    (duration_point,) = points(found, DURATION).values()
    duration_bounds = duration_point.explicit_bounds
    assert duration_bounds[0] == 0.005
    assert duration_bounds[-1] == 60.0
    assert list(duration_bounds) == sorted(duration_bounds)
    (size_point,) = points(found, SIZE).values()
    size_bounds = size_point.explicit_bounds
    assert size_bounds[0] == 1024
    assert list(size_bounds) == sorted(size_bounds)


def test_partial_refusal_counts_each_recipient(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer, library: str
) -> None:
    server.script.rcpt_replies[CAROL] = USER_UNKNOWN
    SENDERS[library](server.port, SENDER, [BOB, CAROL], MESSAGE)

    found = collect(telemetry.metric_reader)
    # Some recipients refused but the message accepted is not an error.
    assert_one_send(found, send_attributes(server.port, library, 250))
    recipients = points(found, RECIPIENTS)
    assert set(recipients) == {
        recipient_attributes("accepted", 250),
        recipient_attributes("refused", 550),
    }
    assert recipients[recipient_attributes("accepted", 250)].value == 1
    assert recipients[recipient_attributes("refused", 550)].value == 1
    assert points(found, SIZE)[SIZE_ATTRIBUTES].count == 1


def test_total_refusal_records_failed_send(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer, library: str
) -> None:
    server.script.rcpt_replies[BOB] = "550 5.1.1 <bob@example.test>: User unknown"
    server.script.rcpt_replies[CAROL] = USER_UNKNOWN
    with pytest.raises(Exception) as raised:
        SENDERS[library](server.port, SENDER, [BOB, CAROL], MESSAGE)
    assert type(raised.value).__name__ == "SMTPRecipientsRefused"

    found = collect(telemetry.metric_reader)
    assert_one_send(found, send_attributes(server.port, library, 550, "550"))
    recipients = points(found, RECIPIENTS)
    assert list(recipients) == [recipient_attributes("refused", 550)]
    assert recipients[recipient_attributes("refused", 550)].value == 2
    # DATA was never sent, so there is no size.
    assert points(found, SIZE) == {}


@pytest.mark.parametrize(
    ("reply", "code"),
    [("451 4.3.0 Try again later", 451), ("554 5.7.1 Message rejected as spam", 554)],
)
def test_data_refusal_records_reply_code(
    telemetry: Telemetry,
    instrument: SmtpInstrumentor,
    server: RecordingServer,
    library: str,
    reply: str,
    code: int,
) -> None:
    server.script.data_reply = reply
    with pytest.raises(Exception, match=str(code)) as raised:
        SENDERS[library](server.port, SENDER, [BOB], MESSAGE)
    assert type(raised.value).__name__ == "SMTPDataError"

    found = collect(telemetry.metric_reader)
    assert_one_send(found, send_attributes(server.port, library, code, str(code)))
    assert points(found, RECIPIENTS)[recipient_attributes("accepted", 250)].value == 1
    # The message was transmitted before the server refused it.
    assert points(found, SIZE)[SIZE_ATTRIBUTES].count == 1


def test_disconnect_at_data_records_error_type(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer, library: str
) -> None:
    server.script.disconnect_at = "DATA"
    with pytest.raises(Exception) as raised:
        SENDERS[library](server.port, SENDER, [BOB], MESSAGE)
    assert type(raised.value).__name__ == "SMTPServerDisconnected"

    found = collect(telemetry.metric_reader)
    # No final reply arrived, so error.type is the only cause recorded.
    assert_one_send(found, send_attributes(server.port, library, 0, DISCONNECTED[library]))
    assert points(found, RECIPIENTS)[recipient_attributes("accepted", 250)].value == 1
    # The server closed the connection after it had read the message.
    assert points(found, SIZE)[SIZE_ATTRIBUTES].count == 1


def test_disconnect_at_rcpt_counts_refused_without_code(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer, library: str
) -> None:
    server.script.disconnect_at = "RCPT"
    with pytest.raises(Exception) as raised:
        SENDERS[library](server.port, SENDER, [BOB], MESSAGE)
    assert type(raised.value).__name__ == "SMTPServerDisconnected"

    found = collect(telemetry.metric_reader)
    assert_one_send(found, send_attributes(server.port, library, 0, DISCONNECTED[library]))
    recipients = points(found, RECIPIENTS)
    assert list(recipients) == [recipient_attributes("refused", None)]
    assert points(found, SIZE) == {}


def test_one_connection_counts_every_message(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail(SENDER, [BOB], MESSAGE)
        client.sendmail(SENDER, [BOB], MESSAGE)
        client.sendmail(SENDER, [BOB], MESSAGE)

    attributes = send_attributes(server.port, "smtplib", 250)
    found = collect(telemetry.metric_reader)
    assert points(found, SENT)[attributes].value == 3
    assert points(found, DURATION)[attributes].count == 3
    assert points(found, RECIPIENTS)[recipient_attributes("accepted", 250)].value == 3
    assert points(found, SIZE)[SIZE_ATTRIBUTES].count == 3


def test_hand_driven_transaction_records_one_send(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(BOB)[0] == 250
        assert client.data(MESSAGE)[0] == 250

    found = collect(telemetry.metric_reader)
    assert_one_send(found, send_attributes(server.port, "smtplib", 250))
    assert points(found, SIZE)[SIZE_ATTRIBUTES].sum == len(server.messages[-1].content)


def test_exemplars_carry_send_span(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer, library: str
) -> None:
    with telemetry.tracer.start_as_current_span("parent"):
        SENDERS[library](server.port, SENDER, [BOB], MESSAGE)

    send_span = telemetry.one_span("smtp send").context
    parent = telemetry.one_span("parent").context
    assert send_span is not None
    assert parent is not None
    assert send_span.trace_id == parent.trace_id
    found = collect(telemetry.metric_reader)
    for name in (DURATION, SENT, RECIPIENTS, SIZE):
        (point,) = points(found, name).values()
        assert len(point.exemplars) == 1, name
        exemplar = point.exemplars[0]
        assert exemplar.trace_id == send_span.trace_id, name
        assert exemplar.span_id == send_span.span_id, name


def test_propagate_false_still_records(
    telemetry: Telemetry, server: RecordingServer, library: str
) -> None:
    with instrumented(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        propagate=False,
    ):
        SENDERS[library](server.port, SENDER, [BOB], MESSAGE)

    assert server.messages[-1].content == MESSAGE
    found = collect(telemetry.metric_reader)
    assert_one_send(found, send_attributes(server.port, library, 250))
    assert points(found, SIZE)[SIZE_ATTRIBUTES].sum == len(MESSAGE)
    (point,) = points(found, SENT).values()
    assert point.exemplars[0].span_id == telemetry.one_span("smtp send").context.span_id


def test_non_recording_tracer_still_records(
    telemetry: Telemetry, server: RecordingServer, library: str
) -> None:
    exporter = InMemorySpanExporter()
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    unsampled.add_span_processor(SimpleSpanProcessor(exporter))
    with instrumented(tracer_provider=unsampled, meter_provider=telemetry.meter_provider):
        SENDERS[library](server.port, SENDER, [BOB], MESSAGE)

    assert exporter.get_finished_spans() == ()
    found = collect(telemetry.metric_reader)
    assert_one_send(found, send_attributes(server.port, library, 250))
    assert points(found, RECIPIENTS)[recipient_attributes("accepted", 250)].value == 1
    (point,) = points(found, DURATION).values()
    # The default trace_based exemplar filter keeps no exemplar of an unsampled span.
    assert point.exemplars == []


def test_suppressed_records_nothing(
    telemetry: Telemetry, instrument: SmtpInstrumentor, server: RecordingServer, library: str
) -> None:
    with suppress_instrumentation():
        SENDERS[library](server.port, SENDER, [BOB], MESSAGE)

    assert server.messages[-1].content == MESSAGE
    assert collect(telemetry.metric_reader) == {}


def test_uninstrumented_records_nothing(
    telemetry: Telemetry, server: RecordingServer, library: str
) -> None:
    with instrumented(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    ):
        pass
    SENDERS[library](server.port, SENDER, [BOB], MESSAGE)

    assert server.messages[-1].content == MESSAGE
    assert collect(telemetry.metric_reader) == {}


class _RaisingHistogram(NoOpHistogram):
    def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("histogram is broken")


class _RaisingCounter(NoOpCounter):
    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("counter is broken")


class _RaisingMeter(NoOpMeter):
    def create_histogram(self, name: str, *args: Any, **kwargs: Any) -> Histogram:
        return _RaisingHistogram(name)

    def create_counter(self, name: str, *args: Any, **kwargs: Any) -> Counter:
        return _RaisingCounter(name)


class _RaisingMeterProvider(NoOpMeterProvider):
    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Meter:
        return _RaisingMeter(name)


def test_raising_meter_never_fails_send(
    telemetry: Telemetry, server: RecordingServer, library: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.script.rcpt_replies[CAROL] = USER_UNKNOWN
    with instrumented(
        tracer_provider=telemetry.tracer_provider, meter_provider=_RaisingMeterProvider()
    ):
        SENDERS[library](server.port, SENDER, [BOB, CAROL], MESSAGE)

    assert server.messages[-1].content.endswith(MESSAGE)
    # The span is complete although every metric call raised.
    span = telemetry.one_span("smtp send")
    assert span.attributes is not None
    assert span.attributes["smtp.response.status_code"] == 250
    assert span.attributes["smtp.recipients.count"] == 2
    assert span.attributes["smtp.recipients.rejected.count"] == 1
    assert span.attributes["smtp.message.size"] == len(server.messages[-1].content)
    assert "recording the send metrics" in caplog.text
    assert "recording the recipient metric" in caplog.text
    assert "recording the message size metric" in caplog.text


ALLOWED_KEYS = {
    "messaging.system",
    "messaging.operation.name",
    "messaging.operation.type",
    "server.address",
    "server.port",
    "network.protocol.name",
    "smtp.response.status_code",
    "smtp.recipient.status",
    "error.type",
}


@pytest.mark.parametrize("capture_addresses", [False, True])
def test_no_personal_data_in_attributes(
    telemetry: Telemetry, server: RecordingServer, library: str, capture_addresses: bool
) -> None:
    server.script.rcpt_replies[CAROL] = USER_UNKNOWN
    server.script.data_reply = POSTFIX_QUEUED
    with instrumented(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_addresses=capture_addresses,
    ):
        SENDERS[library](server.port, SENDER, [BOB, CAROL], MESSAGE)

    # The span has every value that must stay out of the metrics.
    span = telemetry.one_span("smtp send")
    assert span.attributes is not None
    assert span.attributes["smtp.queue_id"] == QUEUE_ID
    assert span.attributes["messaging.message.id"] == MESSAGE_ID

    found = collect(telemetry.metric_reader)
    assert set(found) == {DURATION, SENT, RECIPIENTS, SIZE}
    forbidden = ["@", "example.test", SUBJECT, "report-5517", QUEUE_ID, "queued", "unknown"]
    for name, metric in found.items():
        for point in metric.data.data_points:
            assert point.attributes is not None, name
            assert set(point.attributes) <= ALLOWED_KEYS, name
            for exemplar in point.exemplars:
                assert not exemplar.filtered_attributes, name
            for key, value in point.attributes.items():
                if key == "smtp.response.status_code":
                    assert isinstance(value, int), key
                    assert 200 <= value <= 599, key
                    continue
                for text in forbidden:
                    assert text.lower() not in str(value).lower(), (name, key, value)
