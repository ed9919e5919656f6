"""Flask-Mail against a real server, and a Flask route traced by opentelemetry-instrumentation-flask."""

from __future__ import annotations

import urllib.request

import pytest

pytest.importorskip("flask_mail")
pytest.importorskip("opentelemetry.instrumentation.flask")

from flask import Flask
from flask_mail import Mail, Message
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.trace import SpanKind, StatusCode
from werkzeug.serving import BaseWSGIServer, make_server

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.frameworks.mailcheck import (
    INCOMING_PARENT_ID,
    INCOMING_TRACE_ID,
    INCOMING_TRACEPARENT,
    client_connections,
    parse,
    received_traceparents,
    send_spans,
    serving_once,
    span_traceparent,
    split_traceparent,
)
from tests.smtpserver import RecordingServer


def make_app(server: RecordingServer, **config: object) -> tuple[Flask, Mail]:
    app = Flask(__name__)
    app.config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=server.port,
        MAIL_DEFAULT_SENDER="app@example.com",
        **config,
    )
    mail = Mail(app)

    @app.post("/signup")
    def signup() -> tuple[str, int]:
        mail.send(Message("Welcome", recipients=["new.user@example.com"], body="Hello.\n"))
        return "sent\n", 201

    return app, mail


def ordered_send_spans(telemetry: Telemetry) -> list:  # type: ignore[type-arg]
    return sorted(send_spans(telemetry.spans()), key=lambda span: span.start_time or 0)


def test_mail_send_span_and_header(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    app, mail = make_app(server)

    with app.app_context(), telemetry.tracer.start_as_current_span("job") as parent:
        # The message takes its default sender from the application, so it is built here.
        message = Message(
            "Hi", recipients=["to@example.com"], body="Line one.\n.dot line\n", date=1743501600
        )
        mail.send(message)
        flattened_after = message.as_bytes()

    span = telemetry.one_span("smtp send")
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.status.status_code is StatusCode.UNSET
    received = server.messages[0]
    assert received.mail_from == "app@example.com"
    assert received.rcpt_tos == ["to@example.com"]
    traceparent, rest = split_traceparent(received.content)
    assert traceparent == span_traceparent(span)
    assert parse(rest).get_content() == "Line one.\r\n.dot line\r\n"
    attributes = dict(span.attributes or {})
    assert attributes["smtp.message.size"] == len(received.content)
    assert attributes["messaging.message.id"] == parse(rest)["Message-ID"]
    assert message.extra_headers is None
    assert b"traceparent" not in flattened_after.lower()


def test_connect_several_sends(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    app, mail = make_app(server)

    with app.app_context(), mail.connect() as connection:
        for n in range(3):
            connection.send(Message(f"Note {n}", recipients=[f"user{n}@example.com"], body="x\n"))

    assert client_connections(server) == 1
    assert len(telemetry.spans("smtp connect")) == 1
    spans = ordered_send_spans(telemetry)
    assert len(spans) == 3
    traceparents = received_traceparents(server)
    assert traceparents == [span_traceparent(span) for span in spans]
    assert len(set(traceparents)) == 3


def test_max_emails_reconnects(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    app, mail = make_app(server, MAIL_MAX_EMAILS=2)

    with app.app_context(), mail.connect() as connection:
        for n in range(3):
            connection.send(Message(f"Note {n}", recipients=[f"user{n}@example.com"], body="x\n"))

    assert client_connections(server) == 2
    assert len(telemetry.spans("smtp connect")) == 2
    spans = ordered_send_spans(telemetry)
    assert received_traceparents(server) == [span_traceparent(span) for span in spans]


def test_refused_recipient_raises_same_error(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    server.script.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    app, mail = make_app(server)

    with app.app_context(), pytest.raises(Exception) as raised:
        mail.send(Message("Hi", recipients=["nobody@example.com"], body="x\n"))

    assert type(raised.value).__name__ == "SMTPRecipientsRefused"
    span = telemetry.one_span("smtp send")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "550"
    assert attributes["smtp.response.status_code"] == 550
    assert server.messages == []


def test_route_send_is_child_of_server_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    app, _ = make_app(server)
    FlaskInstrumentor().instrument_app(app, tracer_provider=telemetry.tracer_provider)
    try:

        def build(host: str, port: int) -> BaseWSGIServer:
            return make_server(host, port, app)

        with serving_once(build) as port:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/signup",
                method="POST",
                headers={"traceparent": INCOMING_TRACEPARENT},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    assert status == 201
    server_spans = [span for span in telemetry.spans() if span.kind is SpanKind.SERVER]
    assert len(server_spans) == 1
    server_span = server_spans[0]
    assert server_span.parent is not None
    assert format(server_span.parent.span_id, "016x") == INCOMING_PARENT_ID

    send = telemetry.one_span("smtp send")
    connect = telemetry.one_span("smtp connect")
    for span in (send, connect):
        assert span.parent is not None
        assert span.parent.span_id == server_span.context.span_id
    traceparent, _ = split_traceparent(server.messages[0].content)
    assert traceparent == span_traceparent(send)
    assert traceparent.split("-")[1] == INCOMING_TRACE_ID
