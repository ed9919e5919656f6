"""Connection setup spans: connect, implicit TLS, STARTTLS and login."""

from __future__ import annotations

import smtplib
import socket
import ssl

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.conftest import Telemetry
from tests.smtpserver import PASSWORD, USERNAME, RecordingServer

RAW = b"Subject: tls\r\n\r\nbody\r\n"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connect_span(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port):
        pass
    span = telemetry.one_span("smtp connect")
    attributes = dict(span.attributes or {})
    assert span.kind is SpanKind.CLIENT
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == server.port
    assert attributes["network.peer.port"] == server.port
    assert attributes["smtp.response.status_code"] == 220
    assert span.status.status_code is StatusCode.UNSET


def test_connect_host_port_string(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    client = smtplib.SMTP()
    client.connect(f"127.0.0.1:{server.port}")
    client.quit()
    attributes = dict(telemetry.one_span("smtp connect").attributes or {})
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == server.port


def test_connect_refused(instrument: SmtpInstrumentor, telemetry: Telemetry) -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, timeout=5)
    span = telemetry.one_span("smtp connect")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "ConnectionRefusedError"
    assert attributes["server.port"] == port


def test_connect_timeout(instrument: SmtpInstrumentor, telemetry: Telemetry) -> None:
    # A listening socket that never accepts: the greeting never comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        # smtplib turns the socket timeout into SMTPServerDisconnected.
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtplib.SMTP("127.0.0.1", port, timeout=0.3)
    span = telemetry.one_span("smtp connect")
    assert dict(span.attributes or {})["error.type"] == "smtplib.SMTPServerDisconnected"


def test_smtp_ssl_send(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    tls_server: RecordingServer,
    client_context: ssl.SSLContext,
) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", tls_server.port, context=client_context) as client:
        client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert tls_server.messages[0].content.startswith(b"traceparent: 00-")
    assert tls_server.messages[0].content.endswith(RAW)
    send = telemetry.one_span("smtp send")
    assert dict(send.attributes or {})["server.port"] == tls_server.port
    assert telemetry.one_span("smtp connect").status.status_code is StatusCode.UNSET


def test_smtp_ssl_untrusted_certificate(
    instrument: SmtpInstrumentor, telemetry: Telemetry, tls_server: RecordingServer
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL("127.0.0.1", tls_server.port, context=ssl.create_default_context())
    span = telemetry.one_span("smtp connect")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "ssl.SSLCertVerificationError"


def test_starttls_span(
    instrument: SmtpInstrumentor,
    telemetry: Telemetry,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    recording = RecordingServer(tls_context=server_context).start()
    try:
        with smtplib.SMTP("127.0.0.1", recording.port) as client:
            client.starttls(context=client_context)
            client.sendmail("a@example.com", ["b@example.com"], RAW)
    finally:
        recording.stop()
    span = telemetry.one_span("smtp starttls")
    assert dict(span.attributes or {})["smtp.response.status_code"] == 220
    assert span.status.status_code is StatusCode.UNSET
    assert recording.messages[0].content.endswith(RAW)


def test_starttls_not_supported(
    instrument: SmtpInstrumentor, telemetry: Telemetry, server: RecordingServer
) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls()
    span = telemetry.one_span("smtp starttls")
    assert dict(span.attributes or {})["error.type"] == "smtplib.SMTPNotSupportedError"


def test_login_success_records_no_credentials(
    instrument: SmtpInstrumentor, telemetry: Telemetry
) -> None:
    recording = RecordingServer(auth=True).start()
    try:
        with smtplib.SMTP("127.0.0.1", recording.port) as client:
            client.login(USERNAME, PASSWORD)
    finally:
        recording.stop()
    span = telemetry.one_span("smtp login")
    attributes = dict(span.attributes or {})
    assert attributes["smtp.response.status_code"] == 235
    assert span.status.status_code is StatusCode.UNSET
    dumped = repr(attributes) + repr([e.attributes for e in span.events])
    assert USERNAME not in dumped
    assert PASSWORD not in dumped


def test_login_failure_535(instrument: SmtpInstrumentor, telemetry: Telemetry) -> None:
    recording = RecordingServer(auth=True).start()
    try:
        with smtplib.SMTP("127.0.0.1", recording.port) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                client.login(USERNAME, "wrong password")
    finally:
        recording.stop()
    assert caught.value.smtp_code == 535
    span = telemetry.one_span("smtp login")
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "535"
    assert "wrong password" not in repr(attributes) + (span.status.description or "")


def test_greeting_554_is_error(instrument: SmtpInstrumentor, telemetry: Telemetry) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = smtplib.SMTP(timeout=5)

        import threading

        def greet() -> None:
            connection, _ = listener.accept()
            connection.sendall(b"554 5.7.1 No service for you\r\n")
            connection.recv(100)
            connection.close()

        thread = threading.Thread(target=greet)
        thread.start()
        code, _ = client.connect("127.0.0.1", port)
        client.close()
        thread.join()
    assert code == 554
    span = telemetry.one_span("smtp connect")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "554"
