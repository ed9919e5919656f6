"""The connection limit, the open-file limit and rate-limited accept() failures."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from opentelemetry_instrumentation_smtp.milter import MilterConfig
from opentelemetry_instrumentation_smtp.milter.limits import (
    RateLimitedLog,
    check_max_connections,
)
from tests.conftest import Telemetry

from .conftest import StartMilter
from .driver import MtaDriver
from .postfix import free_port
from .test_faults import server_warnings
from .test_internal_errors import open_connections
from .test_server import open_session

LIMITS_LOGGER = "opentelemetry_instrumentation_smtp.milter.limits"


async def test_max_connections_closes_new_ones(
    start_milter: StartMilter, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_milter(MilterConfig(max_connections=2))
    first = await open_session(server.address)
    second = await open_session(server.address)

    for _ in range(3):
        rejected = await MtaDriver.open(server.address)
        assert await rejected.closed_by_milter()
        await rejected.close()
    assert open_connections(telemetry) == 2
    (warning,) = server_warnings(caplog)
    assert warning.startswith("closing new MTA connection 127.0.0.1:")
    assert warning.endswith(": 2 connections are open, the maximum (--max-connections)")

    # Below the limit again, a new connection is served.
    await first.quit()
    await second.send_message([], queue_id="QSECOND")
    third = await open_session(server.address)
    _, reply = await third.send_message([], queue_id="QTHIRD")
    assert reply.code == b"c"
    await second.quit()
    await third.quit()
    await server.close(timeout=5)
    queue_ids = [span.attributes["smtp.queue_id"] for span in telemetry.spans("smtp receive")]
    assert queue_ids == ["QSECOND", "QTHIRD"]


def test_rate_limited_log_counts_repeats(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = RateLimitedLog(logging.getLogger("test.limits"), interval=60, clock=lambda: now[0])
    log.warning("full: %s", "a")
    now[0] = 130.0
    log.warning("full: %s", "b")
    log.warning("full: %s", "c")
    now[0] = 161.0
    log.warning("full: %s", "d")
    now[0] = 300.0
    log.warning("full: %s", "e")
    assert [r.getMessage() for r in caplog.records if r.name == "test.limits"] == [
        "full: a",
        "full: d (2 more times in the last 61 s)",
        "full: e",
    ]


def test_max_connections_above_file_limit_warns(caplog: pytest.LogCaptureFixture) -> None:
    check_max_connections(512, 1024)
    assert [r for r in caplog.records if r.name == LIMITS_LOGGER] == []
    check_max_connections(512, 300)
    (record,) = [r for r in caplog.records if r.name == LIMITS_LOGGER]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "--max-connections 512 exceeds the 236 file descriptors that the open-file limit "
        "of 300 leaves for MTA connections; lower it or raise LimitNOFILE"
    )


def with_open_file_limit(soft: int, hard: int, *arguments: str) -> list[str]:
    """Return a command that runs Python with ``arguments`` under the given RLIMIT_NOFILE."""
    launcher = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
    )
    return [sys.executable, "-c", launcher, *arguments]


def test_open_file_limit_raised_to_hard_limit() -> None:
    code = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from opentelemetry_instrumentation_smtp.milter.limits import raise_open_file_limit\n"
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    result = subprocess.run(
        with_open_file_limit(256, 1024, "-c", code),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "1024 (1024, 1024)\n"
    assert result.stderr == "raised the open-file limit from 256 to 1024\n"


def test_out_of_file_descriptors_logs_once() -> None:
    port = free_port()
    environment = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    process = subprocess.Popen(
        with_open_file_limit(
            64,
            64,
            "-m",
            "opentelemetry_instrumentation_smtp.milter",
            "--listen",
            f"inet:127.0.0.1:{port}",
            "--max-connections",
            "1000",
        ),
        stderr=subprocess.PIPE,
        env=environment,
        text=True,
    )

    clients: list[socket.socket] = []
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "milter listening on" in line:
                break
        else:
            raise AssertionError(f"the milter did not start: {process.wait()}: {lines}")

        # More idle connections than the milter has file descriptors left.
        for _ in range(80):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        for line in process.stderr:
            lines.append(line)
            if "cannot accept MTA connections" in line or "Traceback" in line:
                break

        # Further attempts while descriptors are still exhausted.
        for _ in range(40):
            clients.append(socket.create_connection(("127.0.0.1", port)))

        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
        lines.extend(rest.splitlines(keepends=True))
    finally:
        for client in clients:
            client.close()
        if process.poll() is None:
            process.kill()
            process.wait()

    output = "".join(lines)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "exceeds the 0 file descriptors that the open-file limit of 64" in output
    accept_failures = [line for line in lines if "cannot accept MTA connections" in line]
    assert len(accept_failures) == 1, output
    assert "[Errno 24] Too many open files; asyncio retries every second" in accept_failures[0]
    assert "milter stopped" in output
