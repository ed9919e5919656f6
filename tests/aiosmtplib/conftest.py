"""Fixtures for the aiosmtplib tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiosmtplib
import pytest

from opentelemetry_instrumentation_smtp import SmtpInstrumentor
from tests.aiosmtplib.support import connected_client
from tests.conftest import Telemetry
from tests.smtpserver import RecordingServer


@pytest.fixture
def instrument_with(telemetry: Telemetry) -> Iterator[Callable[..., SmtpInstrumentor]]:
    """Instrument later in a test, with extra ``instrument()`` keyword arguments."""
    instrumentor = SmtpInstrumentor()

    def instrument(**kwargs: Any) -> SmtpInstrumentor:
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            **kwargs,
        )
        return instrumentor

    yield instrument
    instrumentor.uninstrument()


@pytest.fixture
async def client(server: RecordingServer) -> AsyncIterator[aiosmtplib.SMTP]:
    """A client connected to ``server``; connect it after instrumenting to trace it."""
    smtp = await connected_client(server)
    yield smtp
    if smtp.is_connected:
        await smtp.quit()
