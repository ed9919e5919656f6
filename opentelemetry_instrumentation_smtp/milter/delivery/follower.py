"""Asyncio follower of a log file or of standard input, like ``tail -F``.

A regular file is polled: once a read reaches the end, the follower waits one poll
interval, then compares the file that the path names now with the one it has open. A
different file (rename rotation, as logrotate and ``postfix logrotate`` do it) is read from
its start once the old one is drained. A file that is shorter than the read position, or
whose bytes just before that position changed (``copytruncate``), is read again from its
start. Opening, reading and checking the file run in a worker thread, so that a slow disk
does not stall the event loop.

A FIFO or another file that is not a regular file is read like standard input. A FIFO is
opened again each time its writer closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, BinaryIO

_logger = logging.getLogger(__name__)

STDIN = "-"
DEFAULT_POLL_INTERVAL_SECONDS = 0.25
# Postfix log records are at most a few kilobytes, a quoted multi-line remote reply included.
# A longer line is not from Postfix, and dropping it bounds the memory a bad input can take.
DEFAULT_MAX_LINE_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024
_REOPEN_LOG_INTERVAL_SECONDS = 60.0
# Bytes before the read position that are compared to detect a truncated and refilled file.
_FINGERPRINT_BYTES = 128


class LineSplitter:
    """Sans-IO splitter of a byte stream into text lines, with a bound on line length.

    A line longer than ``max_line_bytes`` is dropped whole and ``on_too_long`` is called.
    """

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        on_too_long: Callable[[], None] | None = None,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self._on_too_long = on_too_long
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[str]:
        """Add ``data`` and return the lines that it completed, without line endings."""
        lines: list[str] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._append(data[start:])
                return lines
            self._append(data[start:newline])
            if self._discarding:
                self._discarding = False
            else:
                lines.append(_decode(bytes(self._buffer)))
            self._buffer.clear()
            start = newline + 1

    def flush(self) -> str | None:
        """Return the incomplete last line, if any, and forget it."""
        pending = None if self._discarding or not self._buffer else _decode(bytes(self._buffer))
        self._buffer.clear()
        self._discarding = False
        return pending

    def _append(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        if len(self._buffer) + len(chunk) > self.max_line_bytes:
            self._buffer.clear()
            self._discarding = True
            if self._on_too_long is not None:
                self._on_too_long()
            return
        self._buffer += chunk


def _decode(raw: bytes) -> str:
    # Postfix logs 8-bit bytes from remote replies as they came. Invalid UTF-8 becomes U+FFFD.
    return raw.decode("utf-8", errors="replace").rstrip("\r")


class LogFollower:
    """Yields the lines appended to ``path`` (``-`` for standard input).

    A file is read from its end unless ``from_start`` is set, and followed across rotation
    and truncation until the iteration is cancelled. Standard input is read until it closes.
    A file that does not exist yet is waited for, and read from its start once it appears.
    """

    def __init__(
        self,
        path: str,
        *,
        from_start: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        on_too_long: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.from_start = from_start
        self.poll_interval = poll_interval
        self._splitter = LineSplitter(max_line_bytes, on_too_long)
        self._file: BinaryIO | None = None
        # The last bytes read before the file position, to recognize the file's content.
        self._fingerprint = b""
        self.rotations = 0
        self.truncations = 0
        # Set once a file is open and positioned, so that callers can wait for it.
        self.opened = asyncio.Event()
        # Set while the follower has read a regular file to its end and waits for more.
        self.caught_up = asyncio.Event()

    async def lines(self) -> AsyncGenerator[str, None]:
        if self.path == STDIN:
            async for line in self._stdin_lines():
                yield line
            return
        try:
            async for line in self._file_lines():
                yield line
        finally:
            self._close()

    async def _stdin_lines(self) -> AsyncIterator[str]:
        async for line in self._stream_lines(sys.stdin.buffer, "Standard input"):
            yield line
        _logger.warning("Standard input closed: no more delivery spans until the milter restarts")

    async def _stream_lines(self, stream: Any, name: str) -> AsyncIterator[str]:
        async for chunk in self._stream_chunks(stream, name):
            for line in self._splitter.feed(chunk):
                yield line
        rest = self._splitter.flush()
        if rest:
            yield rest

    async def _stream_chunks(self, stream: Any, name: str) -> AsyncIterator[bytes]:
        mode = os.fstat(stream.fileno()).st_mode
        # Pipes, sockets and terminals can be polled. Other character devices such as
        # /dev/null cannot, and epoll rejects them only after connect_read_pipe returned.
        pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(stream.fileno())
        if pollable:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=_READ_SIZE)
            protocol = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_read_pipe(lambda: protocol, stream)
            except (OSError, ValueError) as error:
                _logger.info("%s cannot be polled (%s); reading it in a thread", name, error)
            else:
                try:
                    while chunk := await reader.read(_READ_SIZE):
                        yield chunk
                finally:
                    transport.close()
                return
        # A regular file or a device redirected to standard input: read it to its end.
        os.set_blocking(stream.fileno(), True)
        while chunk := await asyncio.to_thread(stream.read1, _READ_SIZE):
            yield chunk

    async def _file_lines(self) -> AsyncIterator[str]:
        regular = await self._open(at_end=not self.from_start)
        if not regular:
            async for line in self._other_file_lines():
                yield line
            return
        while True:
            assert self._file is not None
            chunk = await asyncio.to_thread(self._read)
            if chunk:
                self.caught_up.clear()
                for line in self._splitter.feed(chunk):
                    yield line
                continue
            # At the end of the open file: wait, then check whether it has been replaced or
            # truncated before reading on, so that a refilled file is not read mid-line.
            self.caught_up.set()
            await asyncio.sleep(self.poll_interval)
            change = await asyncio.to_thread(self._check_file)
            if change == "rotated":
                # Drain what the writer added to the old file after the last read.
                while chunk := await asyncio.to_thread(self._read):
                    for line in self._splitter.feed(chunk):
                        yield line
                rest = self._splitter.flush()
                if rest:
                    yield rest
                self.rotations += 1
                _logger.info("Postfix log %s was rotated; reading the new file", self.path)
                self._close()
                await self._open(at_end=False)
                continue
            if change == "truncated":
                self.truncations += 1
                _logger.info("Postfix log %s was truncated; reading it from the start", self.path)
                self._splitter.flush()
                self._file.seek(0)
                self._fingerprint = b""

    async def _other_file_lines(self) -> AsyncIterator[str]:
        """Read a FIFO, reopening it when its writer closes, or another file to its end."""
        while True:
            assert self._file is not None
            # Read the type first, because the pipe transport closes the file at its end.
            is_fifo = stat.S_ISFIFO(os.fstat(self._file.fileno()).st_mode)
            async for line in self._stream_lines(self._file, f"The Postfix log {self.path}"):
                yield line
            if not is_fifo:
                _logger.warning(
                    "The Postfix log %s ended: no more delivery spans until the milter restarts",
                    self.path,
                )
                return
            _logger.info("The writer closed the FIFO %s; waiting for a new writer", self.path)
            self._close()
            await self._open(at_end=False)

    async def _open(self, *, at_end: bool) -> bool:
        """Open the path, waiting for it to exist and to be readable.

        Returns whether it is a regular file. The open does not block on a FIFO without a
        writer, so that shutdown never waits for a writer.
        """
        waited = False
        last_log = -_REOPEN_LOG_INTERVAL_SECONDS
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._file = await asyncio.to_thread(_open_nonblocking, self.path)
            except OSError as error:
                now = loop.time()
                if now - last_log >= _REOPEN_LOG_INTERVAL_SECONDS:
                    _logger.warning(
                        "Cannot open the Postfix log %s (%s); retrying every %.2f s",
                        self.path,
                        error.strerror or error,
                        self.poll_interval,
                    )
                    last_log = now
                waited = True
                await asyncio.sleep(self.poll_interval)
                continue
            break
        self._fingerprint = b""
        if not stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):
            _logger.info("Following the Postfix log %s as a stream", self.path)
            self.opened.set()
            return False
        os.set_blocking(self._file.fileno(), True)
        # A file that appeared while we waited is new: all of it is unread.
        if at_end and not waited:
            self._file.seek(0, os.SEEK_END)
        _logger.info("Following the Postfix log %s from byte %d", self.path, self._file.tell())
        self.opened.set()
        return True

    def _read(self) -> bytes:
        assert self._file is not None
        chunk = self._file.read(_READ_SIZE)
        if chunk:
            self._fingerprint = (self._fingerprint + chunk[-_FINGERPRINT_BYTES:])[
                -_FINGERPRINT_BYTES:
            ]
        return chunk

    def _check_file(self) -> str | None:
        assert self._file is not None
        opened = os.fstat(self._file.fileno())
        try:
            current = os.stat(self.path)
        except OSError:
            # Moved away and not yet recreated: keep the old file until the new one exists.
            return None
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            return "rotated"
        position = self._file.tell()
        if opened.st_size < position:
            return "truncated"
        # A file truncated and refilled to the old size or beyond between two checks has
        # other bytes before the position, because log lines start with a timestamp.
        # NOTE: a refill whose bytes before the position equal the old ones goes unnoticed,
        # and lines written to the old file after the last read are lost with the copy.
        size = len(self._fingerprint)
        if size and os.pread(self._file.fileno(), size, position - size) != self._fingerprint:
            return "truncated"
        return None

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def _open_nonblocking(path: str) -> BinaryIO:
    # O_NONBLOCK makes opening a FIFO return at once even without a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    return os.fdopen(fd, "rb")
