"""fastapi-mail (aiosmtplib underneath) sending from a FastAPI route served by uvicorn."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi_mail")
pytest.importorskip("uvicorn")
pytest.importorskip("opentelemetry.instrumentation.fastapi")

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi_mail import ConnectionConfig, FastMail, MessageSchema, MessageType
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.frameworks.mailcheck import (
    INCOMING_PARENT_ID,
    INCOMING_TRACE_ID,
    INCOMING_TRACEPARENT,
    free_socket,
    parse,
    span_traceparent,
    split_traceparent,
)
from tests.smtpserver import RecordingServer


def make_app(server: RecordingServer) -> FastAPI:
    config = ConnectionConfig(
        MAIL_USERNAME="",
        MAIL_PASSWORD="",
        MAIL_FROM="app@example.com",
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=server.port,
        MAIL_STARTTLS=False,
        MAIL_SSL_TLS=False,
        USE_CREDENTIALS=False,
        VALIDATE_CERTS=False,
        TIMEOUT=30,
    )
    mailer = FastMail(config)
    app = FastAPI()

    @app.post("/signup", status_code=201)
    async def signup() -> dict[str, bool]:
        message = MessageSchema(
            subject="Welcome",
            recipients=["new.user@example.com"],
            body="Hello.\n.dot line\n",
            subtype=MessageType.plain,
        )
        await mailer.send_message(message)
        return {"sent": True}

    return app


@contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    """Run uvicorn on 127.0.0.1 in a thread; leaving the block shuts it down and waits.

    The socket listens before uvicorn starts, so a request made right away waits in the
    backlog instead of failing. Shutdown waits for running requests, so every span of
    the request has ended when the block is left.
    """
    sock = free_socket()
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"


def test_route_send_is_child_of_server_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    app = make_app(server)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    try:
        with serving(app) as port:
            response = httpx.post(
                f"http://127.0.0.1:{port}/signup",
                headers={"traceparent": INCOMING_TRACEPARENT},
                timeout=30,
            )
    finally:
        FastAPIInstrumentor.uninstrument_app(app)

    assert response.status_code == 201
    assert response.json() == {"sent": True}
    server_spans = [span for span in telemetry.spans() if span.kind is SpanKind.SERVER]
    assert len(server_spans) == 1
    server_span = server_spans[0]
    assert server_span.parent is not None
    assert format(server_span.parent.span_id, "016x") == INCOMING_PARENT_ID

    send = telemetry.one_span("smtp send")
    connect = telemetry.one_span("smtp connect")
    for span in (send, connect):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == server_span.context.span_id
    assert send.status.status_code is StatusCode.UNSET

    received = server.messages[0]
    assert received.rcpt_tos == ["new.user@example.com"]
    traceparent, rest = split_traceparent(received.content)
    assert traceparent == span_traceparent(send)
    assert traceparent.split("-")[1] == INCOMING_TRACE_ID
    # fastapi-mail wraps even a plain text body in multipart/mixed.
    body = parse(rest).get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n").strip() == "Hello.\n.dot line"
    attributes = dict(send.attributes or {})
    assert attributes["server.port"] == server.port
    assert attributes["smtp.trace_context.injected"] is True
    assert attributes["smtp.message.size"] == len(received.content)
