"""Loopback servers for the benchmarks, each in its own process.

A server that runs in the benchmark's process would compete with the measured client for
the GIL, so each one runs as ``python benchmarks/_sinks.py smtp|http``. The child prints
its port on the first line of its standard output and serves until its standard input is
closed. Both servers accept every message and discard it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Larger than the biggest benchmark message (10 MB) with room for dot-stuffing.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class _DiscardingHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return "250 2.0.0 Ok: queued as BENCH0001"


def _serve_smtp() -> None:
    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                _DiscardingHandler(),
                hostname="sink.example.test",
                data_size_limit=_MAX_MESSAGE_BYTES,
            ),
            "127.0.0.1",
            0,
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        # Serve until the parent closes our standard input.
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


class _DiscardingHTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the one SMTP connection
    # The status line and headers go out in one write and the body in another. With
    # Nagle's algorithm the body waits for the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 1024 * 1024))
            if not chunk:
                return
            remaining -= len(chunk)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _serve_http() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DiscardingHTTPHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


@contextmanager
def sink(kind: str) -> Iterator[int]:
    """Run a discarding ``smtp`` or ``http`` server in a child process; yield its port."""
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the {kind} sink failed to start: {line!r}")
        yield int(line)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    servers = {"smtp": _serve_smtp, "http": _serve_http}
    if len(sys.argv) != 2 or sys.argv[1] not in servers:
        sys.exit(f"usage: {sys.argv[0]} smtp|http")
    servers[sys.argv[1]]()
