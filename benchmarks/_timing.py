"""Interleaved timing of one operation under several instrumentation modes.

Each round runs every mode once, in a new random order, so that drift of the machine
(frequency scaling, other load, cache state) spreads over all modes alike. The result is
the median of every timed call, and the ratio of each mode's median to the baseline's.

The client benchmarks also share the three modes of the SMTP instrumentation, their SDK
providers, the test message and the Markdown tables defined here.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from opentelemetry_instrumentation_smtp import SmtpInstrumentor

OFF, TRACES, METRICS = "off", "traces", "traces+metrics"
MODES = (OFF, TRACES, METRICS)

# Maximum ratio of an instrumented mode's median to the median of ``off``, per case.
TARGET_RATIO = {"1 KB": 1.05, "10 MB": 1.02}


class NoOpSpanExporter(SpanExporter):
    """A span exporter that drops every batch, so only the SDK's own work is measured."""

    def export(self, spans: Sequence[object]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Mode:
    """One configuration to measure: ``enable`` turns it on, ``disable`` turns it off."""

    name: str
    enable: Callable[[], None]
    disable: Callable[[], None]


@dataclass
class Timings:
    """Wall-clock and process CPU nanoseconds of each call, per mode and per round."""

    wall: dict[str, list[int]] = field(default_factory=dict)
    cpu: dict[str, list[int]] = field(default_factory=dict)
    round_medians: dict[str, list[float]] = field(default_factory=dict)

    def median_wall(self, mode: str) -> float:
        return statistics.median(self.wall[mode])

    def median_cpu(self, mode: str) -> float:
        return statistics.median(self.cpu[mode])

    def ratio(self, mode: str, baseline: str) -> float:
        return self.median_wall(mode) / self.median_wall(baseline)

    def cpu_ratio(self, mode: str, baseline: str) -> float:
        return self.median_cpu(mode) / self.median_cpu(baseline)

    def round_ratio_range(self, mode: str, baseline: str) -> tuple[float, float]:
        """Return the smallest and largest ratio of one round's medians."""
        ratios = [
            m / b
            for m, b in zip(self.round_medians[mode], self.round_medians[baseline], strict=True)
        ]
        return min(ratios), max(ratios)


def interleave(
    operation: Callable[[], object],
    modes: Sequence[Mode],
    rounds: int,
    calls_per_round: int,
    seed: int = 1,
) -> Timings:
    """Time ``calls_per_round`` calls of ``operation`` per mode in each of ``rounds`` rounds.

    One untimed call after each switch lets the mode warm up (first-use caches, lazily
    created objects) before its calls are timed.
    """
    shuffler = random.Random(seed)
    timings = Timings()
    for mode in modes:
        timings.wall[mode.name] = []
        timings.cpu[mode.name] = []
        timings.round_medians[mode.name] = []
    for _ in range(rounds):
        order = list(modes)
        shuffler.shuffle(order)
        for mode in order:
            mode.enable()
            try:
                operation()
                walls: list[int] = []
                for _ in range(calls_per_round):
                    cpu_start = time.process_time_ns()
                    wall_start = time.perf_counter_ns()
                    operation()
                    walls.append(time.perf_counter_ns() - wall_start)
                    timings.cpu[mode.name].append(time.process_time_ns() - cpu_start)
            finally:
                mode.disable()
            timings.wall[mode.name].extend(walls)
            timings.round_medians[mode.name].append(statistics.median(walls))
    return timings


def peak_memory(operation: Callable[[], object], mode: Mode, repeats: int = 3) -> int:
    """Return the smallest tracemalloc peak, in bytes above the start, of one call."""
    peaks: list[int] = []
    mode.enable()
    try:
        operation()
        for _ in range(repeats):
            gc.collect()
            tracemalloc.start()
            try:
                start, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                operation()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            peaks.append(peak - start)
    finally:
        mode.disable()
    return min(peaks)


def machine_description() -> list[str]:
    """Describe the CPU (from ``lscpu``), the OS, the load and the Python interpreter."""
    lines: list[str] = []
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""
    fields = ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor", "L3 cache")
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in fields:
            lines.append(f"{key.strip()}: {value.strip()}")
    lines.append(f"OS: {platform.platform()}")
    one_minute, five_minutes, _ = os.getloadavg()
    lines.append(
        f"Load average at the end of the run: {one_minute:.2f} (1 min), {five_minutes:.2f} (5 min)"
    )
    lines.append(f"Python: {platform.python_implementation()} {platform.python_version()}")
    return lines


def build_message(size: int) -> bytes:
    """Build a CRLF message of exactly ``size`` bytes with 78-character body lines."""
    header = (
        b"From: bench@example.test\r\nTo: sink@example.test\r\nSubject: benchmark\r\n"
        b"Message-ID: <bench@example.test>\r\n\r\n"
    )
    line = b"x" * 76 + b"\r\n"
    body_size = size - len(header)
    body = line * (body_size // len(line))
    body += b"y" * (body_size - len(body))
    return header + body


@dataclass
class Providers:
    """The SDK providers shared by every instrumented mode."""

    tracer: TracerProvider
    meter: SdkMeterProvider

    @classmethod
    def create(cls) -> Providers:
        tracer = TracerProvider()
        tracer.add_span_processor(BatchSpanProcessor(NoOpSpanExporter()))
        meter = SdkMeterProvider(metric_readers=[InMemoryMetricReader()])
        return cls(tracer, meter)

    def shutdown(self) -> None:
        self.tracer.shutdown()
        self.meter.shutdown()


def modes_for(
    instrument: Callable[[TracerProvider, MeterProvider], None],
    uninstrument: Callable[[], None],
    providers: Providers,
) -> list[Mode]:
    """Build the modes ``off``, ``traces`` (with a no-op meter) and ``traces+metrics``."""
    nothing: Callable[[], None] = lambda: None  # noqa: E731
    return [
        Mode(OFF, nothing, nothing),
        Mode(TRACES, lambda: instrument(providers.tracer, NoOpMeterProvider()), uninstrument),
        Mode(METRICS, lambda: instrument(providers.tracer, providers.meter), uninstrument),
    ]


def smtp_modes(providers: Providers) -> list[Mode]:
    """Build the three modes for ``SmtpInstrumentor``, which patches smtplib and aiosmtplib."""
    instrumentor = SmtpInstrumentor()

    def instrument(tracer: TracerProvider, meter: MeterProvider) -> None:
        instrumentor.instrument(tracer_provider=tracer, meter_provider=meter)

    return modes_for(instrument, instrumentor.uninstrument, providers)


def format_ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:.3f}"


def format_ratio(timings: Timings, mode: str) -> str:
    """Format the ratio to ``off`` with the smallest and largest per-round ratio."""
    low, high = timings.round_ratio_range(mode, OFF)
    return f"{timings.ratio(mode, OFF):.3f} ({low:.2f}-{high:.2f})"


def timing_table(results: dict[str, Timings], first_column: str) -> list[str]:
    """Format one Markdown row per case: medians, ratios to ``off`` and client CPU."""
    lines = [
        f"| {first_column} | off (ms) | traces (ms) | traces / off | traces+metrics (ms) "
        "| traces+metrics / off | client CPU off / traces / traces+metrics (µs) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, timings in results.items():
        cpu = " / ".join(f"{timings.median_cpu(mode) / 1e3:.0f}" for mode in MODES)
        lines.append(
            f"| {name} | {format_ms(timings.median_wall(OFF))} "
            f"| {format_ms(timings.median_wall(TRACES))} "
            f"| {format_ratio(timings, TRACES)} | {format_ms(timings.median_wall(METRICS))} "
            f"| {format_ratio(timings, METRICS)} | {cpu} |"
        )
    return lines


def target_lines(results: dict[str, Timings]) -> list[str]:
    """Compare each instrumented mode's ratio to ``off`` with ``TARGET_RATIO``."""
    lines = ["", "Targets:", ""]
    for name, target in TARGET_RATIO.items():
        for mode in (TRACES, METRICS):
            ratio = results[name].ratio(mode, OFF)
            verdict = "met" if ratio <= target else "missed"
            lines.append(f"- {name}, {mode}: {ratio:.3f} (target <= {target}): {verdict}")
    return lines


def peak_memory_table(peaks: dict[str, int], message_size: int) -> list[str]:
    """Format the tracemalloc peak of each mode and its excess over ``off``."""
    lines = ["", "Peak memory of one 10 MB send (tracemalloc, bytes above the start):", ""]
    lines += ["| mode | peak | above off | above off / message size |", "| --- | --- | --- | --- |"]
    for mode, peak in peaks.items():
        above = peak - peaks[OFF]
        lines.append(f"| {mode} | {peak:,} | {above:,} | {above / message_size:.4f} |")
    return lines


def parse_rounds(description: str) -> int:
    """Parse the command line of a client benchmark and return ``--rounds``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--rounds", type=int, default=10, help="rounds of interleaved modes (default 10)"
    )
    rounds: int = parser.parse_args().rounds
    return rounds
