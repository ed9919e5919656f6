"""The log follower on real files and pipes: start position, rotation, truncation, stdin."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from opentelemetry_instrumentation_smtp.milter.delivery.follower import LineSplitter, LogFollower

# A guard against a hung follower, not a timing assertion.
LINE_WAIT_SECONDS = 10.0


async def next_line(lines: AsyncGenerator[str, None]) -> str:
    return await asyncio.wait_for(anext(lines), LINE_WAIT_SECONDS)


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    while text not in caplog.text:
        await asyncio.sleep(0.01)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def test_splitter_partial_and_crlf_lines() -> None:
    splitter = LineSplitter()

    assert splitter.feed(b"first li") == []
    assert splitter.feed(b"ne\r\nsecond\nthi") == ["first line", "second"]
    assert splitter.feed(b"rd\n") == ["third"]
    assert splitter.flush() is None


def test_splitter_flushes_last_partial_line() -> None:
    splitter = LineSplitter()

    splitter.feed(b"no newline")

    assert splitter.flush() == "no newline"
    assert splitter.flush() is None


def test_splitter_drops_too_long_line() -> None:
    too_long: list[int] = []
    splitter = LineSplitter(max_line_bytes=10, on_too_long=lambda: too_long.append(1))

    lines = splitter.feed(b"short\n" + b"x" * 8)
    lines += splitter.feed(b"y" * 8 + b"\nafter\n")

    assert lines == ["short", "after"]
    assert too_long == [1]


def test_splitter_replaces_invalid_utf8() -> None:
    splitter = LineSplitter()

    assert splitter.feed(b"caf\xc3\xa9 \xff\n") == ["café \ufffd"]


async def test_starts_at_end(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    path.write_bytes(b"old line\n")
    follower = LogFollower(str(path), poll_interval=0.01)
    lines = follower.lines()
    first = asyncio.ensure_future(next_line(lines))
    await asyncio.wait_for(follower.opened.wait(), LINE_WAIT_SECONDS)

    append(path, b"new line\n")

    assert await first == "new line"
    await lines.aclose()


async def test_from_start(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    path.write_bytes(b"one\ntwo\n")
    follower = LogFollower(str(path), from_start=True, poll_interval=0.01)
    lines = follower.lines()

    assert await next_line(lines) == "one"
    assert await next_line(lines) == "two"
    append(path, b"three\n")
    assert await next_line(lines) == "three"
    await lines.aclose()


async def test_follows_rename_rotation(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    path.write_bytes(b"")
    follower = LogFollower(str(path), poll_interval=0.01)
    lines = follower.lines()
    pending = asyncio.ensure_future(next_line(lines))
    await asyncio.wait_for(follower.opened.wait(), LINE_WAIT_SECONDS)
    append(path, b"before rotation\n")
    assert await pending == "before rotation"

    # logrotate renames the file; the writer still appends to it until it reopens.
    path.rename(tmp_path / "maillog.1")
    append(tmp_path / "maillog.1", b"late line in old file\n")
    path.write_bytes(b"first line in new file\n")

    assert await next_line(lines) == "late line in old file"
    assert await next_line(lines) == "first line in new file"
    assert follower.rotations == 1
    append(path, b"second line in new file\n")
    assert await next_line(lines) == "second line in new file"
    await lines.aclose()


async def test_follows_truncation(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    path.write_bytes(b"x" * 100 + b"\n")
    follower = LogFollower(str(path), poll_interval=0.01)
    lines = follower.lines()
    pending = asyncio.ensure_future(next_line(lines))
    await asyncio.wait_for(follower.opened.wait(), LINE_WAIT_SECONDS)

    # copytruncate: the file keeps its inode and starts again from byte 0.
    with path.open("r+b") as file:
        file.truncate(0)
    append(path, b"after truncation\n")

    assert await pending == "after truncation"
    assert follower.truncations == 1
    await lines.aclose()


async def test_waits_for_missing_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "maillog"
    follower = LogFollower(str(path), poll_interval=0.01)
    lines = follower.lines()
    pending = asyncio.ensure_future(next_line(lines))
    await asyncio.wait_for(logged(caplog, "Cannot open the Postfix log"), LINE_WAIT_SECONDS)

    # A file that appears later is new, so it is read from its first line.
    path.write_bytes(b"first\n")

    assert await pending == "first"
    assert "Cannot open the Postfix log" in caplog.text
    assert str(path) in caplog.text
    await lines.aclose()


async def test_stdin_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    reader = io.TextIOWrapper(os.fdopen(read_fd, "rb"))
    monkeypatch.setattr(sys, "stdin", reader)
    follower = LogFollower("-")
    lines = follower.lines()

    os.write(write_fd, b"from a pipe\npartial")
    assert await next_line(lines) == "from a pipe"
    os.write(write_fd, b" line\nlast without newline")
    assert await next_line(lines) == "partial line"
    os.close(write_fd)

    assert await next_line(lines) == "last without newline"
    with pytest.raises(StopAsyncIteration):
        await next_line(lines)
    reader.close()


async def test_stdin_regular_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "maillog"
    path.write_bytes(b"one\ntwo\n")
    with path.open("r") as redirected:
        monkeypatch.setattr(sys, "stdin", redirected)
        follower = LogFollower("-")

        received = [line async for line in follower.lines()]

    assert received == ["one", "two"]


async def test_stdin_dev_null(monkeypatch: pytest.MonkeyPatch) -> None:
    with open(os.devnull) as null:
        monkeypatch.setattr(sys, "stdin", null)
        follower = LogFollower("-")

        received = [line async for line in follower.lines()]

    assert received == []
