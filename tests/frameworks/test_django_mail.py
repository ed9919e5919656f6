"""Django's mail API and its SMTP backend against a real server on 127.0.0.1."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("django")

from django.core import mail
from django.core.mail import (
    EmailMessage,
    EmailMultiAlternatives,
    get_connection,
    mail_admins,
    send_mail,
    send_mass_mail,
)
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.frameworks import django_site
from tests.frameworks.mailcheck import (
    client_connections,
    header_names,
    parse,
    received_traceparents,
    send_spans,
    span_traceparent,
    split_traceparent,
)
from tests.smtpserver import RecordingServer

REFUSED = "550 5.1.1 <nobody@example.com>: Recipient address rejected"

# Django adds Date and Message-ID only when they are missing, so with both fixed the
# message bytes are the same on every send.
FIXED_HEADERS = {
    "Message-ID": "<fixed.1@example.com>",
    "Date": "Tue, 01 Apr 2025 10:00:00 -0000",
}


def test_send_mail_span_and_header(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    with telemetry.tracer.start_as_current_span("handle signup") as parent:
        sent = send_mail("Hi", "Body.\n", "from@example.com", ["to@example.com"])

    assert sent == 1
    span = telemetry.one_span("smtp send")
    connect = telemetry.one_span("smtp connect")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert connect.parent is not None
    assert connect.parent.span_id == parent.get_span_context().span_id

    received = django_smtp.messages[0]
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["to@example.com"]
    traceparent, rest = split_traceparent(received.content)
    assert traceparent == span_traceparent(span)
    assert header_names(rest)[0] != "traceparent"

    attributes = dict(span.attributes or {})
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == django_smtp.port
    assert attributes["smtp.recipients.count"] == 1
    assert attributes["smtp.response.status_code"] == 250
    assert attributes["smtp.trace_context.injected"] is True
    assert attributes["smtp.message.size"] == len(received.content)
    assert attributes["messaging.message.id"] == parse(rest)["Message-ID"]
    assert span.status.status_code is StatusCode.UNSET


def test_email_message_bytes_unchanged(telemetry: Telemetry, django_smtp: RecordingServer) -> None:
    def send() -> int:
        message = EmailMessage(
            "Report",
            "Line one.\n.leading dot\nLast line.\n",
            "from@example.com",
            ["to@example.com"],
            headers=FIXED_HEADERS,
        )
        return message.send()

    assert send() == 1
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        assert send() == 1
    finally:
        instrumentor.uninstrument()

    plain, traced = (message.content for message in django_smtp.messages)
    traceparent, rest = split_traceparent(traced)
    assert rest == plain
    assert traceparent == span_traceparent(telemetry.one_span("smtp send"))
    attributes = dict(telemetry.one_span("smtp send").attributes or {})
    assert attributes["messaging.message.id"] == "<fixed.1@example.com>"


def test_multi_alternatives_with_attachment(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    attachment = bytes(range(256)) * 40
    notes = "first line\n.starts with a dot\n..two dots\n"
    message = EmailMultiAlternatives(
        "Invoice", "See the attachment.\n", "from@example.com", ["to@example.com"]
    )
    message.attach_alternative("<p>See the <b>attachment</b>.</p>", "text/html")
    message.attach("invoice.bin", attachment, "application/octet-stream")
    message.attach("notes.txt", notes, "text/plain")
    before = message.message().keys()

    assert message.send() == 1

    span = telemetry.one_span("smtp send")
    traceparent, rest = split_traceparent(django_smtp.messages[0].content)
    assert traceparent == span_traceparent(span)
    received = parse(rest)
    assert received.get_content_type() == "multipart/mixed"
    assert [name.lower() for name in received] == [name.lower() for name in before]
    parts = list(received.iter_attachments())
    assert [part.get_filename() for part in parts] == ["invoice.bin", "notes.txt"]
    assert parts[0].get_content() == attachment
    assert parts[1].get_content().replace("\r\n", "\n") == notes
    body = received.get_body(("html",))
    assert body is not None
    assert body.get_content() == "<p>See the <b>attachment</b>.</p>"
    assert message.message().get_all("traceparent") is None


def test_mail_admins(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    mail_admins("Disk almost full", "/var is at 95%.\n")

    span = telemetry.one_span("smtp send")
    received = django_smtp.messages[0]
    assert received.mail_from == django_site.SERVER_EMAIL
    assert received.rcpt_tos == [address for _, address in django_site.ADMINS]
    traceparent, rest = split_traceparent(received.content)
    assert traceparent == span_traceparent(span)
    assert parse(rest)["Subject"] == "[Django] Disk almost full"


def test_send_mass_mail_one_connection(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    datatuples = [
        (f"Digest {n}", f"Body {n}.\n", "from@example.com", [f"user{n}@example.com"])
        for n in range(3)
    ]

    assert send_mass_mail(datatuples) == 3

    assert client_connections(django_smtp) == 1
    assert len(telemetry.spans("smtp connect")) == 1
    spans = sorted(send_spans(telemetry.spans()), key=lambda span: span.start_time or 0)
    assert len(spans) == 3
    traceparents = received_traceparents(django_smtp)
    assert traceparents == [span_traceparent(span) for span in spans]
    assert len(set(traceparents)) == 3
    assert [m.rcpt_tos for m in django_smtp.messages] == [
        [f"user{n}@example.com"] for n in range(3)
    ]


def test_connection_send_messages(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    messages = [
        EmailMessage(f"Note {n}", "Text.\n", "from@example.com", [f"user{n}@example.com"])
        for n in range(2)
    ]
    with telemetry.tracer.start_as_current_span("batch") as parent:
        connection = get_connection()
        assert connection.send_messages(messages) == 2

    assert client_connections(django_smtp) == 1
    spans = sorted(send_spans(telemetry.spans()), key=lambda span: span.start_time or 0)
    assert len(spans) == 2
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
    assert received_traceparents(django_smtp) == [span_traceparent(span) for span in spans]
    for message in messages:
        assert message.message().get_all("traceparent") is None


def test_fail_silently_refused_recipient(
    telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    django_smtp.script.rcpt_replies["nobody@example.com"] = REFUSED

    def send() -> int:
        return send_mail(
            "Hi", "Body.\n", "from@example.com", ["nobody@example.com"], fail_silently=True
        )

    plain_result = send()
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        traced_result = send()
    finally:
        instrumentor.uninstrument()

    assert plain_result == 0
    assert traced_result == 0
    assert django_smtp.messages == []
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "550"
    assert attributes["smtp.response.status_code"] == 550
    assert attributes["smtp.response.enhanced_status_code"] == "5.1.1"
    assert attributes["smtp.recipients.rejected.count"] == 1
    assert [event.name for event in span.events].count("smtp.recipient.refused") == 1


def test_one_refused_of_two_is_not_error(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    django_smtp.script.rcpt_replies["nobody@example.com"] = REFUSED

    sent = send_mail("Hi", "Body.\n", "from@example.com", ["nobody@example.com", "to@example.com"])

    assert sent == 1
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attributes
    assert attributes["smtp.recipients.count"] == 2
    assert attributes["smtp.recipients.rejected.count"] == 1
    assert django_smtp.messages[0].rcpt_tos == ["to@example.com"]
    assert split_traceparent(django_smtp.messages[0].content)[0] == span_traceparent(span)


def test_locmem_and_console_backends_bypass_smtp(
    instrument: SmtpInstrumentor, telemetry: Telemetry, django_smtp: RecordingServer
) -> None:
    locmem = get_connection("django.core.mail.backends.locmem.EmailBackend")
    assert send_mail("Hi", "Body.\n", "a@example.com", ["b@example.com"], connection=locmem) == 1
    stream = io.StringIO()
    console = get_connection("django.core.mail.backends.console.EmailBackend", stream=stream)
    assert send_mail("Hi", "Body.\n", "a@example.com", ["b@example.com"], connection=console) == 1

    assert mail.outbox[-1].message().get_all("traceparent") is None
    assert "traceparent" not in stream.getvalue().lower()
    assert "Subject: Hi" in stream.getvalue()
    assert telemetry.spans() == []
    assert django_smtp.messages == []
