"""A de-duplicating work queue keyed by instance, with per-key exponential backoff.

Like client-go's workqueue: a key waiting is queued once however often it is added; a key being
processed is never handed to a second worker, and if it was added meanwhile it is queued again
when the first worker is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class WorkQueue:
    def __init__(self, backoff_base: float = 1.0, backoff_max: float = 300.0):
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._nudged: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self.backoff_base, self.backoff_max = backoff_base, backoff_max

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: Hashable) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def nudge(self, key: Hashable) -> None:
        """`add`, unless the key failed and waits for its retry: an event about one of its own
        objects (often from that failed attempt itself) must not turn a backoff into a loop."""
        if key in self._failures and key in self._timers:
            return
        if key in self._active:
            self._nudged.add(key)  # honoured only if this attempt succeeds (see done)
            return
        self.add(key)

    def again(self, key: Hashable) -> None:
        """Queue `key` once more when its pass ends, if that pass succeeds (a failed one comes
        back with its backoff): for news its pass may have missed. Unlike `nudge`, a timer the
        pass left (a status held back) does not stand in for it: it may be a minute away."""
        if key in self._active:
            self._nudged.add(key)
        else:
            self.nudge(key)

    def active(self, key: Hashable) -> bool:
        """Whether a worker is processing `key` now."""
        return key in self._active

    def add_after(self, key: Hashable, delay: float) -> None:
        if key in self._timers:
            self._timers[key].cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        key = await self._ready.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Hashable, *, failed: bool = False) -> float | None:
        """Mark `key` processed; after a failure it is retried later (returns the delay)."""
        self._active.discard(key)
        delay = None
        if failed:
            count = self._failures.get(key, 0)
            self._failures[key] = count + 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** min(count, 30))
            self.add_after(key, delay)
        else:
            self._failures.pop(key, None)
        nudged = key in self._nudged and not failed
        self._nudged.discard(key)
        if key in self._again or nudged:
            self._again.discard(key)
            self.add(key)
        return delay
