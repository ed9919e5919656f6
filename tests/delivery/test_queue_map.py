"""The bounded queue id map: size and age limits, provisional hand-off entries."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanContext, TraceFlags

from opentelemetry_instrumentation_smtp.milter.delivery.queue_map import QueueEntry, QueueIdMap


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def context(number: int) -> SpanContext:
    return SpanContext(number, number, is_remote=False, trace_flags=TraceFlags(1))


def entry(number: int) -> QueueEntry:
    return QueueEntry(parent=context(number), origin_queue_id=f"Q{number}")


def test_add_get_remove() -> None:
    queue_map = QueueIdMap(10, 60.0, 5.0, clock=FakeClock())

    queue_map.add("Q1", entry(1))

    found = queue_map.get("Q1")
    assert found is not None
    assert found.parent == context(1)
    assert len(queue_map) == 1
    assert queue_map.remove("Q1") is found
    assert queue_map.get("Q1") is None
    assert len(queue_map) == 0
    assert queue_map.remove("Q1") is None


def test_size_limit_drops_oldest() -> None:
    evicted: list[str] = []
    queue_map = QueueIdMap(3, 60.0, 5.0, clock=FakeClock(), on_evict=evicted.append)

    for number in range(1, 5):
        queue_map.add(f"Q{number}", entry(number))

    assert len(queue_map) == 3
    assert "Q1" not in queue_map
    assert all(f"Q{n}" in queue_map for n in (2, 3, 4))
    assert evicted == ["size"]


def test_size_limit_drops_provisional_first() -> None:
    evicted: list[str] = []
    queue_map = QueueIdMap(2, 60.0, 5.0, clock=FakeClock(), on_evict=evicted.append)
    queue_map.add("Q1", entry(1))
    queue_map.add("NEXT", entry(2), provisional=True)

    queue_map.add("Q3", entry(3))

    assert "Q1" in queue_map
    assert "Q3" in queue_map
    assert "NEXT" not in queue_map
    assert evicted == ["size"]


def test_age_limit() -> None:
    clock = FakeClock()
    evicted: list[str] = []
    queue_map = QueueIdMap(10, 60.0, 5.0, clock=clock, on_evict=evicted.append)
    queue_map.add("Q1", entry(1))
    clock.now += 30
    queue_map.add("Q2", entry(2))

    clock.now += 30

    assert queue_map.get("Q1") is None
    assert queue_map.get("Q2") is not None
    assert evicted == ["age"]
    clock.now += 30
    assert queue_map.expire() == 1
    assert len(queue_map) == 0
    assert evicted == ["age", "age"]


def test_provisional_entry_short_lived() -> None:
    clock = FakeClock()
    queue_map = QueueIdMap(10, 60.0, 5.0, clock=clock)
    queue_map.add("NEXT", entry(1), provisional=True)

    clock.now += 5

    assert queue_map.get("NEXT") is None
    assert len(queue_map) == 0


def test_provisional_entry_promoted_on_use() -> None:
    clock = FakeClock()
    queue_map = QueueIdMap(10, 60.0, 5.0, clock=clock)
    queue_map.add("Q1", entry(1))
    queue_map.add("NEXT", entry(2), provisional=True)
    clock.now += 4

    assert queue_map.get("NEXT") is not None
    # Promoted at 1004, NEXT now expires at 1064; Q1 expires at 1060.
    clock.now = 1061.0

    assert queue_map.expire() == 1
    assert "Q1" not in queue_map
    assert queue_map.get("NEXT") is not None
    clock.now = 1064.0
    assert queue_map.get("NEXT") is None


def test_add_replaces_existing() -> None:
    queue_map = QueueIdMap(10, 60.0, 5.0, clock=FakeClock())
    queue_map.add("Q1", entry(1), provisional=True)

    queue_map.add("Q1", entry(2))

    assert len(queue_map) == 1
    found = queue_map.get("Q1")
    assert found is not None
    assert found.parent == context(2)


@pytest.mark.parametrize(
    ("max_entries", "ttl", "handoff_ttl", "message"),
    [
        (0, 60.0, 5.0, "max_entries must be at least 1, got 0"),
        (10, 0.0, 5.0, "time to live must be positive"),
        (10, 60.0, -1.0, "time to live must be positive"),
    ],
)
def test_invalid_limits(max_entries: int, ttl: float, handoff_ttl: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QueueIdMap(max_entries, ttl, handoff_ttl)
