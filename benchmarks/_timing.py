"""Interleaved timing of one operation under several instrumentation modes.

Each round runs every mode once, in a new random order, so that drift of the machine
(frequency scaling, other load, cache state) spreads over all modes alike. The result is
the median of every timed call, and the ratio of each mode's median to the baseline's.
"""

from __future__ import annotations

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

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


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
    one, five, _ = os.getloadavg()
    lines.append(f"Load average at the end of the run: {one:.2f} (1 min), {five:.2f} (5 min)")
    lines.append(f"Python: {platform.python_implementation()} {platform.python_version()}")
    return lines
