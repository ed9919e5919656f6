"""Bounded map from Postfix queue ids to the span context that their delivery spans join.

Entries are bounded in number and in age. Postfix logs ``removed`` when a message leaves
the queue, and that line deletes the entry, so in steady state the map contains about the
messages that are still queued.

Queue ids that a next hop reported (``250 ... queued as NEXTQID``) are provisional: most
next hops are other machines whose logs this process does not read, so these entries get a
short time to live of their own. The first log line that uses one makes it a full entry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.trace import SpanContext

# Postfix's maximal_queue_lifetime is 5 days by default. A day more lets the last retry
# and the expiry line of a message still join its trace.
DEFAULT_TTL_SECONDS = 6 * 24 * 3600.0
DEFAULT_MAX_ENTRIES = 100_000
# Local re-injection (a content filter that returns the message to the same Postfix) shows
# up within seconds. Ten minutes leave room for a backlog in the filter.
DEFAULT_HANDOFF_TTL_SECONDS = 600.0


@dataclass(slots=True)
class QueueEntry:
    """Entry stored for one queue id."""

    parent: SpanContext
    """Parent of the delivery spans of this queue id."""
    origin_queue_id: str
    """The queue id that the milter registered; equal to the key unless this is a hand-off."""
    handoff_from: str | None = None
    """The queue id this one was handed off from, for notifications and next hops."""
    handoff_kind: str | None = None
    last_failure: SpanContext | None = None
    """Span context of the latest deferred or bounced attempt: the parent of a
    non-delivery or delay notification."""
    last_success: SpanContext | None = None
    """Span context of the latest successful attempt: the parent of a delivery status
    notification that the sender requested with NOTIFY=SUCCESS."""
    last_dsn: str | None = None
    expires_at: float = field(default=0.0)


class QueueIdMap:
    """Map of queue id to :class:`QueueEntry`, bounded by ``max_entries`` and by age.

    ``on_evict`` is called with ``"size"`` or ``"age"`` for each entry dropped before
    Postfix logged its removal. Times come from ``clock`` (seconds, monotonic).
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float = DEFAULT_TTL_SECONDS,
        handoff_ttl: float = DEFAULT_HANDOFF_TTL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if ttl <= 0 or handoff_ttl <= 0:
            raise ValueError(f"time to live must be positive, got {ttl} and {handoff_ttl}")
        self.max_entries = max_entries
        self.ttl = ttl
        self.handoff_ttl = handoff_ttl
        self._clock = clock
        self._on_evict = on_evict
        # Each dict has a single time to live, so insertion order is expiry order and the
        # oldest entry is always first.
        self._entries: OrderedDict[str, QueueEntry] = OrderedDict()
        self._provisional: OrderedDict[str, QueueEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries) + len(self._provisional)

    def __contains__(self, queue_id: object) -> bool:
        return queue_id in self._entries or queue_id in self._provisional

    def add(self, queue_id: str, entry: QueueEntry, *, provisional: bool = False) -> None:
        """Insert or replace the entry of ``queue_id``."""
        self._entries.pop(queue_id, None)
        self._provisional.pop(queue_id, None)
        now = self._clock()
        self.expire(now)
        while len(self) >= self.max_entries:
            oldest = self._provisional if self._provisional else self._entries
            oldest.popitem(last=False)
            self._evicted("size")
        if provisional:
            entry.expires_at = now + self.handoff_ttl
            self._provisional[queue_id] = entry
        else:
            entry.expires_at = now + self.ttl
            self._entries[queue_id] = entry

    def get(self, queue_id: str) -> QueueEntry | None:
        """Return the live entry of ``queue_id``; a provisional entry becomes a full one."""
        now = self._clock()
        entry = self._entries.get(queue_id)
        if entry is not None:
            if entry.expires_at <= now:
                del self._entries[queue_id]
                self._evicted("age")
                return None
            return entry
        entry = self._provisional.pop(queue_id, None)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._evicted("age")
            return None
        # now + ttl is later than every expiry in _entries, so appending keeps the order.
        entry.expires_at = now + self.ttl
        self._entries[queue_id] = entry
        return entry

    def remove(self, queue_id: str) -> QueueEntry | None:
        """Delete the entry of ``queue_id``, because the message left the queue."""
        entry = self._entries.pop(queue_id, None)
        if entry is None:
            entry = self._provisional.pop(queue_id, None)
        return entry

    def expire(self, now: float | None = None) -> int:
        """Drop entries older than their time to live and return how many were dropped."""
        if now is None:
            now = self._clock()
        dropped = 0
        for entries in (self._entries, self._provisional):
            while entries:
                first = next(iter(entries.values()))
                if first.expires_at > now:
                    break
                entries.popitem(last=False)
                self._evicted("age")
                dropped += 1
        return dropped

    def _evicted(self, reason: str) -> None:
        if self._on_evict is not None:
            self._on_evict(reason)
