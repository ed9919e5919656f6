"""The command line: arguments, SDK configuration, the delivery hook and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import types
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from opentelemetry_instrumentation_smtp.milter import cli, sdk
from opentelemetry_instrumentation_smtp.milter.listen import ListenAddress
from tests.conftest import Telemetry

from .driver import MtaDriver
from .postfix import free_port


def test_policy_flags_build_config() -> None:
    args = cli.build_parser().parse_args(
        [
            "--inject-traceparent",
            "--strip-external",
            "--internal-domain",
            "Example.org.,corp.example",
            "--internal-domain",
            "other.example",
            "--record-addresses",
            "--idle-timeout",
            "120",
        ]
    )
    config = cli.config_from_args(args)
    assert config.policy.inject_traceparent
    assert not config.policy.rewrite_traceparent
    assert config.policy.strip_external
    assert config.policy.internal_domains == {"example.org", "corp.example", "other.example"}
    assert config.record_addresses
    assert config.idle_timeout == 120


def test_defaults_change_nothing() -> None:
    config = cli.config_from_args(cli.build_parser().parse_args([]))
    assert not config.policy.inject_traceparent
    assert not config.policy.rewrite_traceparent
    assert not config.policy.strip_external
    assert not config.record_addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inet:127.0.0.1:8895", ListenAddress("inet", host="127.0.0.1", port=8895)),
        ("inet6:[::1]:0", ListenAddress("inet", host="::1", port=0)),
        ("unix:/run/milter.sock", ListenAddress("unix", path="/run/milter.sock")),
        ("local:/run/milter.sock", ListenAddress("unix", path="/run/milter.sock")),
    ],
)
def test_listen_address_parsing(text: str, expected: ListenAddress) -> None:
    assert ListenAddress.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["tcp:1.2.3.4:1", "inet:host", "inet::25", "inet:h:70000", "unix:"]
)
def test_invalid_listen_address_exits(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["--listen", text])
    assert exit_info.value.code == 2
    assert f"invalid listen address {text!r}" in capsys.readouterr().err


def test_sdk_from_environment() -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}
    exporters = sdk.span_exporters(environ, console=True)
    assert [type(exporter) for exporter in exporters] == [ConsoleSpanExporter]
    assert sdk.metric_readers(environ) == []
    assert sdk.resource({}).attributes["service.name"] == "opentelemetry-smtp-milter"
    assert sdk.resource({"OTEL_SERVICE_NAME": "mx1"}).attributes["service.name"] == "mx1"
    named = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=mx2,deployment.environment=prod"}
    assert sdk.resource(named).attributes["service.name"] == "mx2"


def test_sdk_default_is_otlp_over_http() -> None:
    (exporter,) = sdk.span_exporters({}, console=False)
    assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    exporter.shutdown()


def test_sdk_unknown_exporter_is_an_error() -> None:
    with pytest.raises(
        sdk.ConfigurationError, match="OTEL_TRACES_EXPORTER names exporter 'zipkin'"
    ):
        sdk.span_exporters({"OTEL_TRACES_EXPORTER": "zipkin"}, console=False)
    with pytest.raises(
        sdk.ConfigurationError, match="invalid OTEL_BSP_MAX_QUEUE_SIZE value 'many'"
    ):
        sdk.configure(
            environ={
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_BSP_MAX_QUEUE_SIZE": "many",
            }
        )


async def test_run_starts_and_closes_delivery(telemetry: Telemetry) -> None:
    order: list[str] = []
    done: list[tuple[str, Any]] = []
    port = free_port()

    async def follower() -> None:
        order.append("follower started")
        try:
            await asyncio.Event().wait()
        finally:
            order.append("follower cancelled")

    async def close() -> None:
        order.append("delivery closed")

    def start(args: Any, tracer_provider: Any, meter_provider: Any) -> Any:
        assert args.fake_delivery_option == "value"
        assert tracer_provider is telemetry.tracer_provider
        return lambda queue_id, context: done.append((queue_id, context)), [follower()], close

    def add_arguments(parser: Any) -> None:
        parser.add_argument("--fake-delivery-option")

    delivery = types.SimpleNamespace(add_arguments=add_arguments, start=start)
    parser = cli.build_parser()
    delivery.add_arguments(parser)
    args = parser.parse_args(
        ["--listen", f"inet:127.0.0.1:{port}", "--fake-delivery-option", "value"]
    )
    providers = sdk.Providers(telemetry.tracer_provider, telemetry.meter_provider)
    stop = asyncio.Event()
    running = asyncio.create_task(
        cli.run(args, cli.config_from_args(args), providers, delivery, stop)
    )  # type: ignore[arg-type]
    driver = None
    for _ in range(200):
        try:
            driver = await MtaDriver.open(("127.0.0.1", port))
            break
        except OSError:
            await asyncio.sleep(0.01)
    assert driver is not None
    await driver.start_session()
    await driver.send_message([], queue_id="QCLI")
    await driver.quit()
    stop.set()
    await running
    span = telemetry.one_span("smtp receive")
    assert done == [("QCLI", span.context)]
    assert order == ["follower started", "delivery closed", "follower cancelled"]


def test_delivery_module_is_found() -> None:
    module = cli.load_delivery()
    assert module is not None
    assert callable(module.add_arguments)
    assert callable(module.start)


def test_sigterm_stops_process_gracefully() -> None:
    port = free_port()
    environment = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opentelemetry_instrumentation_smtp.milter",
            "--listen",
            f"inet:127.0.0.1:{port}",
            "--console",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "milter listening on" in line:
                break
        else:
            raise AssertionError(f"the milter did not start: {process.wait()}")

        async def drive() -> None:
            driver = await MtaDriver.open(("127.0.0.1", port))
            await driver.start_session()
            await driver.send_message([("Message-ID", "<sig@example.com>")], queue_id="QSIGTERM")
            await driver.quit()

        asyncio.run(drive())
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "milter stopped" in stderr
    assert "message received: queue_id=QSIGTERM" in stderr
    span = json.loads(stdout)
    assert span["name"] == "smtp receive"
    assert span["attributes"]["smtp.queue_id"] == "QSIGTERM"
    assert span["resource"]["attributes"]["service.name"] == "opentelemetry-smtp-milter"


def test_help_lists_policies() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opentelemetry_instrumentation_smtp.milter", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in (
        "--listen",
        "--inject-traceparent",
        "--rewrite-traceparent",
        "--strip-external",
        "--console",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--idle-timeout", "-5"],
            "argument --idle-timeout: invalid value '-5': use a finite number of seconds",
        ),
        (
            ["--idle-timeout", "0"],
            "argument --idle-timeout: invalid value '0': use a finite number of seconds",
        ),
        (["--frame-timeout", "nan"], "argument --frame-timeout: invalid value 'nan'"),
        (["--frame-timeout", "inf"], "argument --frame-timeout: invalid value 'inf'"),
        (["--frame-timeout", "soon"], "argument --frame-timeout: invalid value 'soon'"),
        (["--shutdown-timeout", "-1"], "argument --shutdown-timeout: invalid value '-1'"),
        (
            ["--max-frame-size", "0"],
            "argument --max-frame-size: invalid value '0': use an integer from 65536 to",
        ),
        (["--max-frame-size", "65535"], "argument --max-frame-size: invalid value '65535'"),
        (["--max-frame-size", "1e6"], "argument --max-frame-size: invalid value '1e6'"),
        (
            ["--max-connections", "0"],
            "argument --max-connections: invalid value '0': use an integer from 1 to",
        ),
        (["--internal-domain", "."], "argument --internal-domain: invalid value '.'"),
        (
            ["--internal-domain", "a..example"],
            "argument --internal-domain: invalid value 'a..example'",
        ),
        (
            ["--internal-domain", "user@example.com"],
            "argument --internal-domain: invalid value 'user@example.com'",
        ),
    ],
)
def test_invalid_limits_exit(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_limits_accept_valid_values() -> None:
    args = cli.build_parser().parse_args(
        [
            "--idle-timeout",
            "0.5",
            "--frame-timeout",
            "2",
            "--shutdown-timeout",
            "0",
            "--max-frame-size",
            "65536",
            "--max-connections",
            "5",
        ]
    )
    config = cli.config_from_args(args)
    assert config.idle_timeout == 0.5
    assert config.frame_timeout == 2
    assert config.shutdown_timeout == 0
    assert config.max_frame_size == 65536
    assert config.max_connections == 5


def test_internal_domain_leading_dot() -> None:
    args = cli.build_parser().parse_args(["--internal-domain", ".Example.com,.corp.example."])
    config = cli.config_from_args(args)
    assert config.policy.internal_domains == {"example.com", "corp.example"}
