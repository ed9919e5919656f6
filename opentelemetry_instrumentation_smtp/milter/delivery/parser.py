"""Sans-IO parser that turns one Postfix log line into a typed delivery event.

The message shapes are those of Postfix 3.x (checked against 3.7.11):

- a delivery attempt, logged by smtp, lmtp, local, virtual, pipe, error, retry, discard and
  qmgr: ``QID: to=<rcpt>, [orig_to=<rcpt>, ]relay=R, [conn_use=N, ]delay=D,
  delays=a/b/c/d, dsn=X.Y.Z, status=S (TEXT)``;
- expiry, logged by qmgr: ``QID: from=<sender>, status=expired, returned to sender``;
- a notification that the bounce daemon queued under a new queue id:
  ``QID: sender non-delivery notification: NEWQID`` (also ``delivery status`` and
  ``delay`` notifications, and ``postmaster`` copies);
- removal from the queue, logged by qmgr: ``QID: removed``.

The next hop's queue id of a successful attempt (``250 2.0.0 Ok: queued as NEXTQID``) is
returned on the attempt itself.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo

from opentelemetry_instrumentation_smtp.attributes import Reply
from opentelemetry_instrumentation_smtp.milter.delivery.prefix import LogRecord, parse_prefix

# Short queue ids are upper-case hexadecimal. Long queue ids (enable_long_queue_ids = yes)
# use digits and upper- and lower-case letters.
_QUEUE_ID = r"[0-9A-Za-z]{5,20}"
_NUMBER = r"\d+(?:\.\d+)?"

_ATTEMPT_START = re.compile(rf"(?P<queue_id>{_QUEUE_ID}): to=<")
_ATTEMPT = re.compile(
    rf"(?P<queue_id>{_QUEUE_ID}): to=<(?P<recipient>[^>]*)>, "
    r"(?:orig_to=<(?P<original_recipient>[^>]*)>, )?"
    r"relay=(?P<relay>[^,\s]+), "
    r"(?:conn_use=(?P<connection_use>\d+), )?"
    rf"delay=(?P<delay>{_NUMBER}), "
    rf"delays=(?P<delays>{_NUMBER}/{_NUMBER}/{_NUMBER}/{_NUMBER}), "
    r"dsn=(?P<dsn>[245]\.\d{1,3}\.\d{1,3}), "
    r"status=(?P<status>[A-Za-z]+)(?: \((?P<detail>.*)\))?",
    re.DOTALL,
)
_EXPIRED = re.compile(
    rf"(?P<queue_id>{_QUEUE_ID}): from=<[^>]*>, status=expired, returned to sender"
)
_NOTIFICATION = re.compile(
    rf"(?P<queue_id>{_QUEUE_ID}): "
    r"(?P<kind>(?:sender|postmaster) (?:non-delivery|delivery status|delay) notification): "
    rf"(?P<new_queue_id>{_QUEUE_ID})"
)
_REMOVED = re.compile(rf"(?P<queue_id>{_QUEUE_ID}): removed")
_STARTS_WITH_QUEUE_ID = re.compile(rf"(?:{_QUEUE_ID}|NOQUEUE): ")

# "host mx.example.com[192.0.2.1] said: 550 5.7.1 blocked (in reply to RCPT TO command)"
_REMOTE_REPLY = re.compile(
    r"host (?P<host>[^\s\[\]]+)\[(?P<address>[^\]]*)\] said: (?P<reply>.*?)"
    r"(?: \(in reply to (?P<command>.+?) command\))?",
    re.DOTALL,
)
_BARE_REPLY = re.compile(r"(?P<code>[2-5]\d\d)(?:[ -](?P<text>.*))?", re.DOTALL)
# Postfix's own text for a failed connection names the peer:
# "connect to mx.example.com[192.0.2.1]:25: Connection refused",
# "lost connection with mx.example.com[192.0.2.1] while receiving the initial server greeting",
# "conversation with mx.example.com[192.0.2.1] timed out while sending end of data".
_PEER_IN_TEXT = re.compile(
    r"(?:connect to|lost connection with|conversation with) "
    r"(?P<host>[^\s\[\]]+)\[(?P<address>[^\]]+)\](?::(?P<port>\d+))?"
)
_RELAY = re.compile(r"(?P<host>[^\[\]]+)\[(?P<address>[^\]]+)\](?::(?P<port>\d+))?")

# Postfix statuses that are not one of the four outcomes, mapped to the outcome they stand
# for. With soft_bounce = yes, Postfix logs SOFTBOUNCE where it would have bounced, and
# the message stays in the queue.
_STATUS_ALIASES = {"SOFTBOUNCE": "deferred"}
# Address verification probes (sendmail -bv, reject_unverified_recipient) log these; they
# are not deliveries.
_PROBE_STATUSES = frozenset({"deliverable", "undeliverable"})
DELIVERY_STATUSES = frozenset({"sent", "deferred", "bounced", "expired"})


class LineResult(enum.Enum):
    """Outcome of parsing one line. The values are also the metric attribute values."""

    EVENT = "event"
    IGNORED = "ignored"
    """A Postfix line that is not about delivery, such as ``connect from`` or ``client=``."""
    UNKNOWN = "unknown"
    """A line that is not in any Postfix log shape."""
    MALFORMED = "malformed"
    """A delivery line whose fields could not be read."""


@dataclass(frozen=True)
class Relay:
    """The ``relay=`` field: ``host[address]:port``, ``none``, or a transport name."""

    raw: str
    host: str | None = None
    address: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class Delays:
    """The four ``delays=a/b/c/d`` stages, in seconds."""

    before_queue_manager: float
    """Time before the queue manager, including message transmission to Postfix."""
    in_queue_manager: float
    connection_setup: float
    """Connection setup, including DNS, HELO and TLS."""
    transmission: float


@dataclass(frozen=True)
class RemoteReply:
    """The next hop's reply as Postfix quotes it, with the lines joined."""

    status_code: int
    text: str
    """Reply text after the three-digit code, starting with the enhanced status code if any."""
    host: str | None = None
    address: str | None = None
    command: str | None = None
    """The command that the reply was for, such as ``RCPT TO`` or ``end of DATA``."""


@dataclass(frozen=True)
class DeliveryAttempt:
    """One delivery attempt to one recipient."""

    timestamp: datetime
    queue_id: str
    recipient: str
    original_recipient: str | None
    relay: Relay
    delay: float
    """Seconds from the message's arrival to the end of this attempt."""
    delays: Delays
    dsn: str
    status: str
    """One of ``sent``, ``deferred`` or ``bounced``."""
    raw_status: str
    detail: str | None
    """The text in parentheses after the status, unredacted."""
    reply: RemoteReply | None
    next_hop_queue_id: str | None
    connection_use: int | None
    program: str | None


@dataclass(frozen=True)
class MessageExpired:
    """The queue manager gave up on a message and returned it to the sender."""

    timestamp: datetime
    queue_id: str
    program: str | None


@dataclass(frozen=True)
class QueueIdHandoff:
    """A notification about ``queue_id`` that Postfix queued as ``new_queue_id``."""

    timestamp: datetime
    queue_id: str
    new_queue_id: str
    kind: str
    """Postfix's words for it, such as ``sender non-delivery notification``."""
    program: str | None


@dataclass(frozen=True)
class MessageRemoved:
    """The message left the queue; Postfix logs nothing more under this queue id."""

    timestamp: datetime
    queue_id: str
    program: str | None


Event = DeliveryAttempt | MessageExpired | QueueIdHandoff | MessageRemoved


@dataclass(frozen=True)
class ParsedLine:
    """The result of parsing one line: the event, if any, and what the line was."""

    result: LineResult
    event: Event | None = None
    record: LogRecord | None = None


def parse_line(line: str, *, now: datetime, local_timezone: tzinfo | None = None) -> ParsedLine:
    """Parse one log line. ``now`` is the read time, used when the line has no timestamp."""
    record = parse_prefix(line, now=now, local_timezone=local_timezone)
    timestamp = record.timestamp or now
    message = record.message
    program = record.program

    if _ATTEMPT_START.match(message):
        return _parse_attempt(record, timestamp)

    match = _NOTIFICATION.fullmatch(message)
    if match:
        handoff = QueueIdHandoff(
            timestamp=timestamp,
            queue_id=match.group("queue_id"),
            new_queue_id=match.group("new_queue_id"),
            kind=match.group("kind"),
            program=program,
        )
        return ParsedLine(LineResult.EVENT, handoff, record)

    match = _EXPIRED.fullmatch(message)
    if match:
        expired = MessageExpired(timestamp, match.group("queue_id"), program)
        return ParsedLine(LineResult.EVENT, expired, record)

    match = _REMOVED.fullmatch(message)
    if match:
        removed = MessageRemoved(timestamp, match.group("queue_id"), program)
        return ParsedLine(LineResult.EVENT, removed, record)

    if program is not None or _STARTS_WITH_QUEUE_ID.match(message):
        return ParsedLine(LineResult.IGNORED, None, record)
    return ParsedLine(LineResult.UNKNOWN, None, record)


def _parse_attempt(record: LogRecord, timestamp: datetime) -> ParsedLine:
    match = _ATTEMPT.fullmatch(record.message)
    if match is None:
        return ParsedLine(LineResult.MALFORMED, None, record)

    raw_status = match.group("status")
    if raw_status in _PROBE_STATUSES:
        return ParsedLine(LineResult.IGNORED, None, record)
    status = _STATUS_ALIASES.get(raw_status, raw_status)
    if status not in DELIVERY_STATUSES or status == "expired":
        return ParsedLine(LineResult.MALFORMED, None, record)

    before, in_manager, setup, transmission = (
        float(part) for part in match.group("delays").split("/")
    )
    detail = match.group("detail")
    reply = _parse_reply(detail)
    next_hop_queue_id = None
    if status == "sent" and reply is not None:
        next_hop_queue_id = Reply(reply.status_code, reply.text).queue_id
    connection_use = match.group("connection_use")

    attempt = DeliveryAttempt(
        timestamp=timestamp,
        queue_id=match.group("queue_id"),
        recipient=match.group("recipient"),
        original_recipient=match.group("original_recipient"),
        relay=_parse_relay(match.group("relay"), detail),
        delay=float(match.group("delay")),
        delays=Delays(before, in_manager, setup, transmission),
        dsn=match.group("dsn"),
        status=status,
        raw_status=raw_status,
        detail=detail,
        reply=reply,
        next_hop_queue_id=next_hop_queue_id,
        connection_use=int(connection_use) if connection_use else None,
        program=record.program,
    )
    return ParsedLine(LineResult.EVENT, attempt, record)


def _parse_reply(detail: str | None) -> RemoteReply | None:
    if not detail:
        return None
    match = _REMOTE_REPLY.fullmatch(detail)
    if match:
        bare = _BARE_REPLY.fullmatch(match.group("reply"))
        if bare is None:
            return None
        return RemoteReply(
            status_code=int(bare.group("code")),
            text=(bare.group("text") or "").strip(),
            host=match.group("host"),
            address=match.group("address"),
            command=match.group("command"),
        )
    # A successful SMTP or LMTP delivery quotes the reply alone: "250 2.0.0 Ok: queued as X".
    bare = _BARE_REPLY.fullmatch(detail)
    if bare:
        return RemoteReply(int(bare.group("code")), (bare.group("text") or "").strip())
    return None


def _parse_relay(raw: str, detail: str | None) -> Relay:
    match = _RELAY.fullmatch(raw)
    if match:
        port = match.group("port")
        return Relay(raw, match.group("host"), match.group("address"), int(port) if port else None)
    if raw == "none" and detail:
        # No connection was made, but the reason names the server that failed.
        peer = _PEER_IN_TEXT.match(detail)
        if peer:
            port = peer.group("port")
            return Relay(
                raw, peer.group("host"), peer.group("address"), int(port) if port else None
            )
    return Relay(raw)


def transport_of(program: str | None) -> str | None:
    """Return the Postfix daemon name of a syslog tag: ``postfix-out/smtp`` gives ``smtp``."""
    if not program:
        return None
    return program.rsplit("/", 1)[-1]
