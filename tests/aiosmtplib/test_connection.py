"""aiosmtplib connection setup spans: connect, implicit TLS, STARTTLS and login."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections.abc import Iterator

import aiosmtplib
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import RAW, RECIPIENTS, SENDER, inserted_line, split_traceparent
from tests.conftest import Telemetry
from tests.smtpserver import PASSWORD, USERNAME, RecordingServer


@pytest.fixture
def starttls_server(server_context: ssl.SSLContext) -> Iterator[RecordingServer]:
    recording = RecordingServer(tls_context=server_context, auth=True).start()
    yield recording
    recording.stop()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False)
    response = await client.connect()
    await client.quit()

    assert response.code == 220
    span = telemetry.one_span("smtp connect")
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "network.protocol.name": "smtp",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "network.peer.address": "127.0.0.1",
        "network.peer.port": server.port,
        "network.transport": "tcp",
        "smtp.response.status_code": 220,
        "smtp.response.message": "mx.example.test recording-server",
    }


async def test_connect_arguments_override_constructor(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    client = aiosmtplib.SMTP(hostname="localhost", port=1, start_tls=False)
    await client.connect(hostname="127.0.0.1", port=server.port)
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    for name in ("smtp connect", "smtp send"):
        attributes = dict(telemetry.one_span(name).attributes or {})
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == server.port


async def test_connect_refused(instrument: SmtpInstrumentor, telemetry: Telemetry) -> None:
    port = closed_port()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5)
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await client.connect()

    span = telemetry.one_span("smtp connect")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "aiosmtplib.errors.SMTPConnectError"
    assert attributes["server.port"] == port


async def test_implicit_tls_send(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    tls_server: RecordingServer,
    client_context: ssl.SSLContext,
) -> None:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=tls_server.port, use_tls=True, tls_context=client_context
    )
    await client.connect()
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    send = telemetry.one_span("smtp send")
    line, rest = split_traceparent(tls_server.messages[0].content)
    assert line == inserted_line(send)
    assert rest == RAW
    assert dict(send.attributes or {})["network.peer.port"] == tls_server.port
    assert telemetry.one_span("smtp connect").status.status_code is StatusCode.UNSET


async def test_untrusted_certificate(
    instrument: SmtpInstrumentor, telemetry: Telemetry, tls_server: RecordingServer
) -> None:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=tls_server.port,
        use_tls=True,
        tls_context=ssl.create_default_context(),
        timeout=5,
    )
    with pytest.raises(aiosmtplib.SMTPConnectError) as raised:
        await client.connect()

    span = telemetry.one_span("smtp connect")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "aiosmtplib.errors.SMTPConnectError"
    assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)


async def test_starttls_and_login_on_connect(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    starttls_server: RecordingServer,
    client_context: ssl.SSLContext,
) -> None:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=starttls_server.port,
        start_tls=True,
        tls_context=client_context,
        username=USERNAME,
        password=PASSWORD,
    )
    with telemetry.tracer.start_as_current_span("parent"):
        await client.connect()
        await client.sendmail(SENDER, RECIPIENTS, RAW)
        await client.quit()

    connect = telemetry.one_span("smtp connect")
    starttls = telemetry.one_span("smtp starttls")
    login = telemetry.one_span("smtp login")
    assert connect.context is not None
    assert starttls.parent is not None
    assert starttls.parent.span_id == connect.context.span_id
    assert login.parent is not None
    assert login.parent.span_id == connect.context.span_id
    assert dict(starttls.attributes or {})["smtp.response.status_code"] == 220
    login_attributes = dict(login.attributes or {})
    assert login_attributes["smtp.response.status_code"] == 235
    dumped = repr(login_attributes) + repr([event.attributes for event in login.events])
    assert USERNAME not in dumped
    assert PASSWORD not in dumped
    assert starttls_server.messages[0].content.endswith(RAW)


async def test_login_failure_535(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    starttls_server: RecordingServer,
    client_context: ssl.SSLContext,
) -> None:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=starttls_server.port, tls_context=client_context
    )
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as raised:
        await client.login(USERNAME, "wrong password")
    client.close()

    assert raised.value.code == 535
    span = telemetry.one_span("smtp login")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "535"
    assert "wrong password" not in repr(attributes) + (span.status.description or "")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
async def test_unix_socket_send(instrument: SmtpInstrumentor, telemetry: Telemetry) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "smtp.sock")
        recording = RecordingServer(unix_path=path).start()
        try:
            client = aiosmtplib.SMTP(hostname=None, socket_path=path, start_tls=False)
            await client.connect()
            await client.sendmail(SENDER, RECIPIENTS, RAW)
            await client.quit()
        finally:
            recording.stop()

    send = telemetry.one_span("smtp send")
    attributes = dict(send.attributes or {})
    assert attributes["network.transport"] == "unix"
    assert attributes["server.address"] == path
    assert "server.port" not in attributes
    assert split_traceparent(recording.messages[0].content)[0] == inserted_line(send)
