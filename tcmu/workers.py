"""Serving commands concurrently: a bounded worker pool per handler, an event loop for
async storage methods, and range claims that keep the ordering rules.

BlockHandler uses these when its `workers` option is above 0 (or its storage methods
are `async def`): each storage command then runs on a pool thread and completes through
cmd.complete(), out of order; the ring thread only dispatches.

Ordering: a command claims the LBA ranges it touches, in arrival order (the ring
thread takes claims), shared for reads and exclusive for writes; it starts only when
every earlier claim it conflicts with is released. So commands that overlap a write run
in the order they arrived (COMPARE AND WRITE, ORWRITE and WRITE ATOMIC are atomic
against any overlapping command, a READ after a WRITE sees its data), while commands
on other blocks pass a slow one. Whole-device claims (UNMAP, FORMAT UNIT, MODE SELECT,
START STOP UNIT, reconfiguration) wait for everything before them.

No deadlock: the pool takes jobs in arrival order, so every claim a job waits for
belongs to a job that is already running or done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

Ranges = Sequence[tuple[int, int]] | None  # [start, end) LBA ranges; None: the device


@dataclasses.dataclass(eq=False)
class Claim:
    """One command's hold on LBA ranges; `wait()` until the earlier conflicting claims
    are released."""

    ranges: Ranges
    exclusive: bool
    before: list[Claim]
    released: threading.Event = dataclasses.field(default_factory=threading.Event)

    def conflicts(self, ranges: Ranges, exclusive: bool) -> bool:
        if not (self.exclusive or exclusive):
            return False  # two readers
        if self.ranges is None or ranges is None:
            return True
        return any(a < d and c < b for a, b in self.ranges for c, d in ranges)

    def wait(self) -> None:
        for claim in self.before:
            claim.released.wait()


class RangeClaims:
    """The live claims of one handler, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[Claim] = []

    def claim(self, ranges: Ranges, exclusive: bool) -> Claim:
        """Take a claim (call in arrival order: the ring thread)."""
        with self._lock:
            before = [c for c in self._live if c.conflicts(ranges, exclusive)]
            claim = Claim(ranges, exclusive, before)
            self._live.append(claim)
        return claim

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._live.remove(claim)
        claim.released.set()

    def __len__(self) -> int:
        return len(self._live)


class Workers:
    """A pool of `count` threads and, for async storage, one event-loop thread."""

    def __init__(self, count: int, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix=name)
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        self._pool.submit(job)

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run a coroutine of an async storage method on the event loop and wait for it
        (from a pool thread or the ring thread, never from the loop itself)."""
        loop = self._event_loop()
        if threading.current_thread() is self._loop_thread:
            raise RuntimeError("an async storage method called a synchronous storage path; "
                               "await the other storage method instead")
        return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), loop).result()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"{self._name}-loop",
                                          daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def shutdown(self) -> None:
        """Wait for the jobs in flight, then stop the pool and the loop."""
        self._pool.shutdown(wait=True)
        with self._loop_lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
