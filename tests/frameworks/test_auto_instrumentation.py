"""``opentelemetry-instrument`` in a subprocess: the entry point, switches and variables.

Two environments run the same script: the test environment, which has aiosmtplib, and
a virtual environment built once per session with only this package, the SDK and
opentelemetry-distro, so that a missing aiosmtplib is shown not to disable smtplib.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.frameworks.mailcheck import split_traceparent
from tests.smtpserver import RecordingServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("autoinstrumented_send.py")
ORIGINAL_START = b"From: cron@example.com\r\n"


@dataclass
class Run:
    spans: list[dict[str, Any]]
    stderr: str

    def named(self, name: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"] == name]


def parse_console_spans(stdout: str) -> list[dict[str, Any]]:
    """Decode the JSON objects that the console span exporter printed one after another."""
    decoder = json.JSONDecoder()
    spans = []
    position = 0
    while True:
        while position < len(stdout) and stdout[position].isspace():
            position += 1
        if position == len(stdout):
            return spans
        span, position = decoder.raw_decode(stdout, position)
        spans.append(span)


def _pinned_versions() -> str:
    """Return pip constraints that pin every distribution installed here except this one."""
    lines = []
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name and name.lower() != "opentelemetry-instrumentation-smtp":
            lines.append(f"{name}=={distribution.version}")
    return "\n".join(sorted(set(lines))) + "\n"


@pytest.fixture(scope="session")
def bare_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a virtual environment without aiosmtplib and return its ``bin`` directory.

    The versions are pinned to this environment's, so pip resolves nothing new and
    mostly reuses its cache.
    """
    root = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=True).create(root)
    bin_dir = root / ("Scripts" if os.name == "nt" else "bin")
    constraints = root / "constraints.txt"
    constraints.write_text(_pinned_versions())
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--constraint",
            str(constraints),
            str(PROJECT_ROOT),
            "opentelemetry-distro",
            "opentelemetry-sdk",
        ],
        check=True,
        timeout=300,
    )
    return bin_dir


def run_instrumented(bin_dir: Path, port: int, **variables: str) -> Run:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    environment.update(
        OTEL_SERVICE_NAME="auto-instrumentation-test",
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        SMTP_PORT=str(port),
    )
    environment.update(variables)
    completed = subprocess.run(
        [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"), str(SCRIPT)],
        env=environment,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return Run(parse_console_spans(completed.stdout), completed.stderr)


@pytest.fixture(params=["with aiosmtplib", "without aiosmtplib"])
def environment_bin(request: pytest.FixtureRequest) -> Path:
    if request.param == "with aiosmtplib":
        pytest.importorskip("aiosmtplib")
        return Path(sys.executable).parent
    bin_dir: Path = request.getfixturevalue("bare_environment")
    return bin_dir


def test_span_and_header(environment_bin: Path, server: RecordingServer) -> None:
    run = run_instrumented(environment_bin, server.port)

    with_aiosmtplib = environment_bin == Path(sys.executable).parent
    assert f"aiosmtplib importable: {with_aiosmtplib}" in run.stderr
    sends = run.named("smtp send")
    assert len(sends) == 1
    send = sends[0]
    assert send["kind"] == "SpanKind.CLIENT"
    assert send["attributes"]["smtp.trace_context.injected"] is True
    assert send["attributes"]["messaging.message.id"] == "<nightly.1@example.com>"
    assert send["attributes"]["server.port"] == server.port
    assert len(run.named("smtp connect")) == 1

    traceparent, rest = split_traceparent(server.messages[0].content)
    trace_id = send["context"]["trace_id"].removeprefix("0x")
    span_id = send["context"]["span_id"].removeprefix("0x")
    assert traceparent.split("-")[1:3] == [trace_id, span_id]
    assert rest.startswith(ORIGINAL_START)
    # The distro's global propagators include baggage, but mail gets trace context only.
    assert b"baggage" not in rest.lower()
    assert b"tenant" not in rest.lower()


def test_disabled_by_environment(server: RecordingServer) -> None:
    run = run_instrumented(
        Path(sys.executable).parent, server.port, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="smtp"
    )

    assert run.named("smtp send") == []
    assert run.named("smtp connect") == []
    assert server.messages[0].content.startswith(ORIGINAL_START)


def test_propagate_false(server: RecordingServer) -> None:
    run = run_instrumented(
        Path(sys.executable).parent, server.port, OTEL_INSTRUMENTATION_SMTP_PROPAGATE="false"
    )

    sends = run.named("smtp send")
    assert len(sends) == 1
    assert sends[0]["attributes"]["smtp.trace_context.injected"] is False
    assert server.messages[0].content.startswith(ORIGINAL_START)


def test_capture_addresses_true(server: RecordingServer) -> None:
    run = run_instrumented(
        Path(sys.executable).parent,
        server.port,
        OTEL_INSTRUMENTATION_SMTP_CAPTURE_ADDRESSES="true",
    )

    attributes = run.named("smtp send")[0]["attributes"]
    assert attributes["smtp.envelope.from"] == "cron@example.com"
    assert attributes["smtp.envelope.to"] == ["ops@example.com"]


def test_addresses_not_captured_by_default(server: RecordingServer) -> None:
    run = run_instrumented(Path(sys.executable).parent, server.port)

    attributes = run.named("smtp send")[0]["attributes"]
    assert "smtp.envelope.from" not in attributes
    assert "smtp.envelope.to" not in attributes


def test_invalid_value_warns_and_keeps_default(server: RecordingServer) -> None:
    run = run_instrumented(
        Path(sys.executable).parent, server.port, OTEL_INSTRUMENTATION_SMTP_PROPAGATE="maybe"
    )

    assert "Invalid value 'maybe' for OTEL_INSTRUMENTATION_SMTP_PROPAGATE" in run.stderr
    assert run.named("smtp send")[0]["attributes"]["smtp.trace_context.injected"] is True
    split_traceparent(server.messages[0].content)
