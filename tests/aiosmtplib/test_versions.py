"""Which aiosmtplib gets instrumented, and that smtplib never depends on it."""

from __future__ import annotations

import logging
import smtplib
import sys

import aiosmtplib
import pytest

from opentelemetry_instrumentation_smtp import SmtpInstrumentor, _aiosmtplib, package
from tests.aiosmtplib.support import RAW, RECIPIENTS, SENDER, connected_client
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer

WRAPPED = ("sendmail", "send_message", "mail", "rcpt", "data", "rset", "close", "connect")


def adapter_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == _aiosmtplib.__name__]


def instrument(telemetry: Telemetry) -> SmtpInstrumentor:
    instrumentor = SmtpInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    return instrumentor


def send_with_smtplib(server: RecordingServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail(SENDER, RECIPIENTS, RAW)


def test_missing_aiosmtplib_keeps_smtplib(
    telemetry: Telemetry,
    server: RecordingServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes "import aiosmtplib" raise ModuleNotFoundError.
    monkeypatch.setitem(sys.modules, "aiosmtplib", None)
    instrumentor = instrument(telemetry)
    try:
        send_with_smtplib(server)
    finally:
        instrumentor.uninstrument()

    assert len(telemetry.spans("smtp send")) == 1
    records = adapter_records(caplog)
    assert [record.getMessage() for record in records] == [
        "aiosmtplib is not installed, so only smtplib is instrumented"
    ]
    assert records[0].exc_info is None
    assert records[0].levelno == logging.INFO


@pytest.mark.parametrize(
    "supported", ["aiosmtplib >= 99", "aiosmtplib < 2"], ids=["too-old", "too-new"]
)
async def test_version_outside_range_keeps_smtplib(
    telemetry: Telemetry,
    server: RecordingServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    supported: str,
) -> None:
    monkeypatch.setattr(package, "_aiosmtplib_instruments", supported)
    original = aiosmtplib.SMTP.sendmail
    instrumentor = instrument(telemetry)
    try:
        assert aiosmtplib.SMTP.sendmail is original
        send_with_smtplib(server)
        client = await connected_client(server)
        await client.sendmail(SENDER, RECIPIENTS, RAW)
        await client.quit()
    finally:
        instrumentor.uninstrument()

    assert len(telemetry.spans("smtp send")) == 1
    assert server.messages[1].content == RAW
    records = adapter_records(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert message == (
        f"aiosmtplib is not instrumented because version {aiosmtplib.__version__} is "
        f"outside the supported range ({supported}); smtplib still is"
    )
    assert records[0].exc_info is None
    assert records[0].levelno == logging.WARNING


def test_installed_version_is_supported(caplog: pytest.LogCaptureFixture) -> None:
    assert _aiosmtplib._skip_reason(aiosmtplib) is None
    assert package._aiosmtplib_instruments.startswith("aiosmtplib ")


def test_uninstrument_restores_originals(telemetry: Telemetry) -> None:
    originals = {name: aiosmtplib.SMTP.__dict__[name] for name in WRAPPED}
    instrumentor = instrument(telemetry)
    wrapped = {name: aiosmtplib.SMTP.__dict__[name] for name in WRAPPED}
    instrumentor.uninstrument()

    for name in WRAPPED:
        assert wrapped[name] is not originals[name], name
        assert aiosmtplib.SMTP.__dict__[name] is originals[name], name


async def test_instrument_twice_one_span(telemetry: Telemetry, server: RecordingServer) -> None:
    first = instrument(telemetry)
    second = SmtpInstrumentor()
    second.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        client = await connected_client(server)
        await client.sendmail(SENDER, RECIPIENTS, RAW)
        await client.quit()
    finally:
        first.uninstrument()

    assert len(telemetry.spans("smtp send")) == 1
    assert server.messages[0].content.count(b"traceparent:") == 1


async def test_after_uninstrument_nothing_traced(
    telemetry: Telemetry, server: RecordingServer
) -> None:
    instrument(telemetry).uninstrument()
    client = await connected_client(server)
    await client.sendmail(SENDER, RECIPIENTS, RAW)
    await client.quit()

    assert telemetry.spans() == []
    assert server.messages[0].content == RAW
