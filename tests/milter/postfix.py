"""A private Postfix instance for integration tests, and a sink that it relays to.

Everything lives under one temporary directory: configuration, queue, data and log.
Postfix listens on a loopback port chosen at run time, relays every message to the sink
(an aiosmtpd server on another loopback port), and calls the milter at ``milter``. With
``milter_default_action = tempfail`` a milter that is down makes the test fail instead of
letting mail through unobserved. Postfix must run as root, as it does in CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

MYHOSTNAME = "mta.example.test"
_STOP_WAIT_SECONDS = 30.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postfix_binary() -> str | None:
    """Return the path of the ``postfix`` command, looking in /usr/sbin too."""
    return shutil.which("postfix") or shutil.which("postfix", path="/usr/sbin:/sbin")


@dataclass
class SunkMessage:
    """One message as the sink received it from Postfix."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class _SinkHandler:
    messages: list[SunkMessage] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.arrived:
            self.messages.append(
                SunkMessage(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(content))
            )
            self.arrived.notify_all()
        return "250 2.0.0 Ok: sunk"


class Sink:
    """An SMTP server on 127.0.0.1 that accepts and keeps every message."""

    def __init__(self) -> None:
        self._handler = _SinkHandler()
        self.port = free_port()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[SunkMessage]:
        """Messages received so far, in order."""
        with self._handler.arrived:
            return list(self._handler.messages)

    def start(self) -> Sink:
        """Start accepting connections."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop the server."""
        self._controller.stop()

    def wait_for(self, count: int, timeout: float) -> list[SunkMessage]:
        """Wait until ``count`` messages have arrived; raise ``TimeoutError`` if they do not."""
        deadline = time.monotonic() + timeout
        with self._handler.arrived:
            while len(self._handler.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"the sink got {len(self._handler.messages)} of {count} messages "
                        f"within {timeout} s; see the Postfix log"
                    )
                self._handler.arrived.wait(remaining)
            return list(self._handler.messages)


class Postfix:
    """A Postfix instance of its own, started with ``postfix -c DIRECTORY``.

    ``milter`` is a Postfix milter address such as ``inet:127.0.0.1:PORT`` or ``None``
    for none. ``settings`` adds or overrides main.cf parameters.
    """

    def __init__(
        self,
        directory: Path,
        *,
        relay_port: int,
        milter: str | None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.config_directory = directory / "etc"
        self.log_file = directory / "log" / "postfix.log"
        self.smtp_port = free_port()
        self._relay_port = relay_port
        self._milter = milter
        self._settings = settings or {}
        self._started = False

    def main_cf(self) -> dict[str, str]:
        """Return the main.cf parameters of this instance."""
        directory = self.directory
        parameters = {
            "compatibility_level": "3.6",
            "queue_directory": str(directory / "queue"),
            "data_directory": str(directory / "data"),
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(directory),
            "myhostname": MYHOSTNAME,
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self._relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "milter_protocol": "6",
            "milter_default_action": "tempfail",
        }
        if self._milter is not None:
            parameters["smtpd_milters"] = self._milter
        parameters.update(self._settings)
        return parameters

    def _run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(arguments, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(arguments)} exited with {result.returncode}: "
                f"{result.stdout}{result.stderr}\nPostfix log:\n{self.log()}"
            )
        return result

    def start(self) -> Postfix:
        """Write the configuration, create the queue and start the master process."""
        config = self.config_directory
        # The postfix user must be able to reach the data directory.
        self.directory.chmod(0o755)
        for name in ("etc", "queue", "data", "log"):
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        shutil.copy("/etc/postfix/master.cf", config / "master.cf")
        lines = [f"{name} = {value}" for name, value in self.main_cf().items()]
        (config / "main.cf").write_text("\n".join(lines) + "\n")
        postconf = ("postconf", "-c", str(config))
        self._run(*postconf, "-M#", "smtp/inet")
        listener = f"127.0.0.1:{self.smtp_port}"
        self._run(*postconf, "-Me", f"{listener}/inet = {listener} inet n - n - - smtpd")
        self._run(*postconf, "-F", "*/*/chroot = n")
        shutil.chown(self.directory / "data", "postfix", "postfix")
        self._run("postfix", "-c", str(config), "check")
        self._run("postfix", "-c", str(config), "start")
        self._started = True
        self._wait_for_listener()
        return self

    def _wait_for_listener(self) -> None:
        # Probing the port with a TCP connection would open a milter session, so the
        # check looks for the listening socket in /proc instead.
        # local_address column of /proc/net/tcp: 127.0.0.1 and the port, in hex.
        local_address = f"0100007F:{self.smtp_port:04X}"
        deadline = time.monotonic() + _STOP_WAIT_SECONDS
        while time.monotonic() < deadline:
            table = Path("/proc/net/tcp").read_text()
            if any(
                line.split()[1] == local_address and line.split()[3] == "0A"  # TCP_LISTEN
                for line in table.splitlines()[1:]
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"Postfix does not listen on port {self.smtp_port}:\n{self.log()}")

    def master_pid(self) -> int | None:
        """Return the master process id from its pid file, if it is running."""
        pid_file = self.directory / "queue" / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        """Stop the master process and wait until it has exited."""
        if not self._started:
            return
        pid = self.master_pid()
        subprocess.run(
            ("postfix", "-c", str(self.config_directory), "stop"), capture_output=True, check=False
        )
        deadline = time.monotonic() + _STOP_WAIT_SECONDS
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self._started = False

    def flush(self) -> None:
        """Ask Postfix to retry every deferred message now."""
        self._run("postqueue", "-c", str(self.config_directory), "-f")

    def log(self) -> str:
        """Return the instance's log so far, for failure messages."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
