"""The log follower on FIFOs, refilled truncated files and closing streams."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from opentelemetry_instrumentation_smtp.milter import cli, sdk
from opentelemetry_instrumentation_smtp.milter.delivery.follower import LogFollower
from opentelemetry_instrumentation_smtp.milter.delivery.processor import DeliveryProcessor
from tests.conftest import Telemetry
from tests.milter.postfix import free_port

from .test_follower import LINE_WAIT_SECONDS, append, logged, next_line

FOLLOWER_LOGGER = "opentelemetry_instrumentation_smtp.milter.delivery.follower"


def open_writer(path: Path) -> int:
    """Open the FIFO for writing; fails with ENXIO if no reader has it open."""
    return os.open(path, os.O_WRONLY | os.O_NONBLOCK)


async def test_fifo_with_writer(tmp_path: Path) -> None:
    path = tmp_path / "maillog.fifo"
    os.mkfifo(path)
    follower = LogFollower(str(path), poll_interval=0.01)
    lines = follower.lines()
    pending = asyncio.ensure_future(next_line(lines))
    await asyncio.wait_for(follower.opened.wait(), LINE_WAIT_SECONDS)

    writer = open_writer(path)
    os.write(writer, b"first\nsecond\n")
    assert await pending == "first"
    assert await next_line(lines) == "second"

    # A writer that closes and a new one that opens, as syslog daemons do on restart.
    os.write(writer, b"unterminated")
    os.close(writer)
    assert await next_line(lines) == "unterminated"
    pending = asyncio.ensure_future(next_line(lines))
    while True:
        try:
            writer = open_writer(path)
            break
        except OSError:
            await asyncio.sleep(0.01)
    os.write(writer, b"third\n")
    assert await pending == "third"
    os.close(writer)
    await lines.aclose()


async def test_fifo_without_writer_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "maillog.fifo"
    os.mkfifo(path)
    follower = LogFollower(str(path), poll_interval=0.01)
    pending = asyncio.ensure_future(next_line(follower.lines()))

    await asyncio.wait_for(follower.opened.wait(), LINE_WAIT_SECONDS)

    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending


def test_sigterm_with_fifo_without_writer(tmp_path: Path) -> None:
    path = tmp_path / "maillog.fifo"
    os.mkfifo(path)
    environment = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opentelemetry_instrumentation_smtp.milter",
            "--listen",
            f"inet:127.0.0.1:{free_port()}",
            "--postfix-log",
            str(path),
        ],
        stderr=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "Following the Postfix log" in line:
                break
        else:
            raise AssertionError(f"the follower did not start: {process.wait()}")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "milter stopped" in stderr


async def test_truncated_and_refilled_file_is_read_from_start(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    path.write_bytes(b"")
    follower = LogFollower(str(path), poll_interval=0.01)
    lines = follower.lines()
    pending = asyncio.ensure_future(next_line(lines))
    await asyncio.wait_for(follower.opened.wait(), LINE_WAIT_SECONDS)
    append(path, b"Dec  4 10:00:01 old line one\nDec  4 10:00:02 old line two\n")
    assert await pending == "Dec  4 10:00:01 old line one"
    assert await next_line(lines) == "Dec  4 10:00:02 old line two"
    pending = asyncio.ensure_future(next_line(lines))
    await asyncio.wait_for(follower.caught_up.wait(), LINE_WAIT_SECONDS)

    # copytruncate, and more lines than before written before the follower looks again.
    with path.open("r+b") as file:
        file.truncate(0)
    append(path, b"Dec  4 10:00:03 new line one, longer than the old ones\n")
    append(path, b"Dec  4 10:00:04 new line two\n")

    assert await pending == "Dec  4 10:00:03 new line one, longer than the old ones"
    assert await next_line(lines) == "Dec  4 10:00:04 new line two"
    assert follower.truncations == 1
    await lines.aclose()


async def test_stdin_close_logs_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    read_fd, write_fd = os.pipe()
    reader = io.TextIOWrapper(os.fdopen(read_fd, "rb"))
    monkeypatch.setattr(sys, "stdin", reader)
    os.write(write_fd, b"only\n")
    os.close(write_fd)

    received = [line async for line in LogFollower("-").lines()]

    reader.close()
    assert received == ["only"]
    (record,) = [r for r in caplog.records if r.name == FOLLOWER_LOGGER]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "Standard input closed: no more delivery spans until the milter restarts"
    )


async def test_failing_follower_logs_error_at_once(
    tmp_path: Path,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(self: DeliveryProcessor, line: str) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(DeliveryProcessor, "process_line", fail)
    path = tmp_path / "maillog"
    path.write_bytes(b"Dec  4 10:00:01 mx postfix/smtp[1]: a line\n")
    delivery = cli.load_delivery()
    assert delivery is not None
    parser = cli.build_parser()
    delivery.add_arguments(parser)
    args = parser.parse_args(
        [
            "--listen",
            f"inet:127.0.0.1:{free_port()}",
            "--postfix-log",
            str(path),
            "--postfix-log-from-start",
        ]
    )
    providers = sdk.Providers(telemetry.tracer_provider, telemetry.meter_provider)
    stop = asyncio.Event()
    running = asyncio.create_task(
        cli.run(args, cli.config_from_args(args), providers, delivery, stop)
    )

    await asyncio.wait_for(logged(caplog, "delivery task"), LINE_WAIT_SECONDS)

    assert not running.done()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage() == (
        "delivery task DeliveryService.follow stopped: RuntimeError: injected failure; "
        "no more delivery spans until the milter restarts"
    )
    assert errors[0].exc_info is not None
    stop.set()
    await running
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
