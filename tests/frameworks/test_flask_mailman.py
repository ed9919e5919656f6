"""Flask-Mailman (Django's mail API for Flask) against a real server on 127.0.0.1."""

from __future__ import annotations

import pytest

pytest.importorskip("flask_mailman")

from flask import Flask
from flask_mailman import EmailMessage, Mail
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.frameworks.mailcheck import (
    client_connections,
    parse,
    received_traceparents,
    send_spans,
    span_traceparent,
    split_traceparent,
)
from tests.smtpserver import RecordingServer


def make_app(server: RecordingServer) -> tuple[Flask, Mail]:
    app = Flask(__name__)
    app.config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=server.port,
        MAIL_DEFAULT_SENDER="app@example.com",
        MAIL_BACKEND="smtp",
    )
    mail = Mail(app)
    return app, mail


def test_send_mail_span_and_header(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    app, mail = make_app(server)

    with app.app_context():
        sent = mail.send_mail("Hi", "Body.\n.dot line\n", None, ["to@example.com"])

    assert sent == 1
    span = telemetry.one_span("smtp send")
    assert span.status.status_code is StatusCode.UNSET
    received = server.messages[0]
    assert received.mail_from == "app@example.com"
    traceparent, rest = split_traceparent(received.content)
    assert traceparent == span_traceparent(span)
    assert parse(rest).get_content() == "Body.\r\n.dot line\r\n"
    attributes = dict(span.attributes or {})
    assert attributes["messaging.message.id"] == parse(rest)["Message-ID"]
    assert attributes["smtp.message.size"] == len(received.content)


def test_connection_send_messages(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    app, mail = make_app(server)

    with app.app_context():
        messages = [
            EmailMessage(f"Note {n}", "Text.\n", None, [f"user{n}@example.com"]) for n in range(3)
        ]
        with mail.get_connection() as connection:
            sent = connection.send_messages(messages)
        headers_after = [message.message().get_all("traceparent") for message in messages]

    assert sent == 3
    assert client_connections(server) == 1
    assert len(telemetry.spans("smtp connect")) == 1
    spans = sorted(send_spans(telemetry.spans()), key=lambda span: span.start_time or 0)
    assert len(spans) == 3
    traceparents = received_traceparents(server)
    assert traceparents == [span_traceparent(span) for span in spans]
    assert len(set(traceparents)) == 3
    assert headers_after == [None, None, None]


def test_fail_silently_refused_recipient(telemetry: Telemetry, server: RecordingServer) -> None:
    server.script.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    app, mail = make_app(server)

    def send() -> object:
        with app.app_context():
            return mail.send_mail("Hi", "x\n", None, ["nobody@example.com"], fail_silently=True)

    plain_result = send()
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        traced_result = send()
    finally:
        instrumentor.uninstrument()

    assert plain_result == 0
    assert traced_result == 0
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "550"
    assert attributes["smtp.recipients.rejected.count"] == 1
