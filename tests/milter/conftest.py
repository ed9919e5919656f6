"""Fixtures of the milter tests: an in-process milter on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from opentelemetry_instrumentation_smtp.milter import MilterConfig, MilterServer
from tests.conftest import Telemetry

StartMilter = Callable[..., Awaitable[MilterServer]]


@pytest.fixture
async def start_milter(telemetry: Telemetry) -> AsyncIterator[StartMilter]:
    """Start milters with the test providers; each is closed after the test."""
    servers: list[MilterServer] = []

    async def start(config: MilterConfig | None = None, **options: Any) -> MilterServer:
        options.setdefault("tracer_provider", telemetry.tracer_provider)
        options.setdefault("meter_provider", telemetry.meter_provider)
        server = MilterServer(config=config, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close(timeout=5)
