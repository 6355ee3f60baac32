"""queue.WorkQueue: de-duplication, one worker per key, re-queue after processing, backoff."""

from __future__ import annotations

import asyncio

import pytest

from jupyternetes_ssa.queue import WorkQueue

DEADLINE = 2.0  # generous upper bound for anything that should happen "soon"
NOT_YET = 0.05  # how long we wait to be convinced something is NOT handed out


async def get(q: WorkQueue):
    return await asyncio.wait_for(q.get(), timeout=DEADLINE)


async def nothing_ready(q: WorkQueue) -> bool:
    """True if `get` hands out nothing within NOT_YET (the waiting get is cancelled)."""
    try:
        key = await asyncio.wait_for(q.get(), timeout=NOT_YET)
    except TimeoutError:
        return True
    pytest.fail(f"unexpectedly handed out {key!r}")


async def test_a_key_added_many_times_is_queued_once() -> None:
    q = WorkQueue()
    for _ in range(3):
        q.add(("ns", "a"))
    assert len(q) == 1
    assert await get(q) == ("ns", "a")
    assert len(q) == 0
    assert await nothing_ready(q)


async def test_distinct_keys_come_out_in_order() -> None:
    q = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [await get(q) for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_being_processed_is_not_handed_out_again() -> None:
    q = WorkQueue()
    q.add("a")
    assert await get(q) == "a"
    q.add("a")
    assert len(q) == 0
    assert await nothing_ready(q)


async def test_a_key_added_while_processed_is_requeued_once_when_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert await get(q) == "a"
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 1
    assert q.done("a") is None
    assert len(q) == 2
    assert [await get(q), await get(q)] == ["b", "a"]
    q.done("a")
    q.done("b")
    assert len(q) == 0
    assert await nothing_ready(q)


async def test_a_key_not_added_while_processed_is_not_requeued() -> None:
    q = WorkQueue()
    q.add("a")
    await get(q)
    q.done("a")
    assert len(q) == 0
    assert await nothing_ready(q)
    q.add("a")  # and it can be added again afterwards
    assert await get(q) == "a"


async def test_two_workers_never_share_a_key() -> None:
    q = WorkQueue()
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    try:
        q.add("a")
        done, _ = await asyncio.wait(
            {first, second}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED
        )
        assert len(done) == 1
        assert done.pop().result() == "a"
        q.add("a")  # still active: must not wake the other worker
        _, pending = await asyncio.wait({first, second}, timeout=NOT_YET)
        assert len(pending) == 1
        q.done("a")  # ... until it is done
        done, _ = await asyncio.wait(pending, timeout=DEADLINE)
        assert [t.result() for t in done] == ["a"]
    finally:
        for task in (first, second):
            task.cancel()


async def test_workers_get_different_keys_concurrently() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("b")
    assert {await get(q), await get(q)} == {"a", "b"}


async def test_backoff_doubles_and_is_capped() -> None:
    q = WorkQueue(backoff_base=0.01, backoff_max=0.05)
    delays = []
    q.add("k")
    for _ in range(5):
        assert await get(q) == "k"
        delays.append(q.done("k", failed=True))
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])
    assert await get(q) == "k"
    q.done("k")


async def test_success_resets_the_backoff() -> None:
    q = WorkQueue(backoff_base=0.01, backoff_max=1.0)
    q.add("k")
    await get(q)
    assert q.done("k", failed=True) == pytest.approx(0.01)
    await get(q)
    assert q.done("k", failed=True) == pytest.approx(0.02)
    await get(q)
    assert q.done("k") is None
    q.add("k")
    await get(q)
    assert q.done("k", failed=True) == pytest.approx(0.01)
    assert await get(q) == "k"
    q.done("k")


async def test_backoff_is_per_key() -> None:
    q = WorkQueue(backoff_base=0.01, backoff_max=1.0)
    q.add("a")
    await get(q)
    q.done("a", failed=True)
    await get(q)
    assert q.done("a", failed=True) == pytest.approx(0.02)
    q.add("b")
    assert await get(q) == "b"
    assert q.done("b", failed=True) == pytest.approx(0.01)
    assert {await get(q), await get(q)} == {"a", "b"}
    q.done("a")
    q.done("b")


async def test_a_failed_key_comes_back_after_its_delay_not_before() -> None:
    q = WorkQueue(backoff_base=0.1, backoff_max=1.0)
    loop = asyncio.get_running_loop()
    q.add("k")
    await get(q)
    started = loop.time()
    assert q.done("k", failed=True) == pytest.approx(0.1)
    assert len(q) == 0
    assert await nothing_ready(q)
    assert await get(q) == "k"
    assert loop.time() - started >= 0.1 - 0.01  # the loop clock's resolution
    q.done("k")


async def test_a_failed_key_added_meanwhile_is_queued_once() -> None:
    q = WorkQueue(backoff_base=0.1, backoff_max=0.1)
    q.add("k")
    await get(q)
    q.add("k")
    q.done("k", failed=True)  # re-queued now (added meanwhile) and again by the timer
    assert len(q) == 1
    assert await get(q) == "k"
    # the backoff timer still fires: "k" comes back once more
    q.done("k")
    assert await get(q) == "k"
    q.done("k")


async def test_add_after_delays_a_key() -> None:
    q = WorkQueue()
    q.add_after("k", 0.01)
    assert len(q) == 0
    assert await get(q) == "k"
    q.done("k")


async def test_add_after_replaces_the_pending_timer() -> None:
    q = WorkQueue()
    q.add_after("k", 60)
    q.add_after("k", 0.01)
    assert await get(q) == "k"
    q.done("k")
    assert await nothing_ready(q)


async def test_add_after_of_a_key_being_processed_waits_for_done() -> None:
    q = WorkQueue()
    q.add("k")
    q.add_after("k", 0.01)
    assert await get(q) == "k"
    assert await nothing_ready(q)  # the timer's add is held while "k" is active
    q.done("k")
    assert await get(q) == "k"
    q.done("k")
    assert len(q) == 0
    assert await nothing_ready(q)


async def test_a_nudge_never_cuts_a_backoff_short_but_an_add_does() -> None:
    """Events about a failed key's own objects (its undone start) wait for its retry; a change
    to the key itself (a fixed template) is served at once."""
    q = WorkQueue(backoff_base=60.0)
    q.add("k")
    assert await q.get() == "k"
    q.nudge("k")  # an event from this very attempt
    q.done("k", failed=True)
    q.nudge("k")
    assert len(q) == 0
    q.add("k")
    assert len(q) == 1
