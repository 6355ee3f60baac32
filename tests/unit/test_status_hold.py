"""Progress statuses in a burst (controller._pace_status): held while other instances wait, so
that their pods come first; never lost, never held twice, never re-queued forever."""

from __future__ import annotations

import time

from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.settings import Settings

PENDING = {"phase": "Pending"}  # progress: the hub waits for Ready or an error, not for this
A, B = ("ns", "a"), ("ns", "b")


def _instance(key: tuple[str, str]) -> dict:
    return {"metadata": {"namespace": key[0], "name": key[1]}}


def _controller(interval: float = 3.0) -> Controller:
    ctl = Controller(
        None, Settings(namespaces=("ns",), leader_elect=False, status_interval_seconds=interval)
    )
    ctl._status_clock[A] = time.monotonic() - 10 * interval  # a's interval is long over
    return ctl


async def test_progress_due_is_written_at_once_when_nothing_waits():
    ctl = _controller()
    assert ctl._pace_status(_instance(A), PENDING) == 0.0
    assert not ctl._status_held


async def test_progress_due_while_others_wait_is_held_once_then_written():
    ctl = _controller()
    ctl.queue.add(B)  # another instance waits for its pods
    assert ctl._pace_status(_instance(A), PENDING) == 3.0  # held, at most one more interval
    assert A in ctl._status_held
    assert ctl._pace_status(_instance(A), PENDING) == 0.0  # the next pass writes, busy or not
    assert A not in ctl._status_held


async def test_held_progress_is_queued_again_when_the_queue_runs_dry():
    ctl = _controller()
    ctl.queue.add(B)
    ctl._pace_status(_instance(A), PENDING)
    ctl._release_held()
    assert len(ctl.queue) == 1  # b still waits: nothing released yet
    key = await ctl.queue.get()
    ctl.queue.done(key)
    ctl._release_held()
    assert await ctl.queue.get() == A  # released: its pass writes the status
    assert ctl._pace_status(_instance(A), PENDING) == 0.0


async def test_a_verdict_clears_the_hold_so_it_is_not_requeued_forever():
    ctl = _controller()
    ctl.queue.add(B)
    ctl._pace_status(_instance(A), PENDING)
    degraded = {"phase": "Failed", "conditions": [{"type": "Degraded", "status": "True"}]}
    assert ctl._pace_status(_instance(A), degraded) == 0.0  # a verdict: at once
    assert not ctl._status_held
    ctl.queue.done(await ctl.queue.get())
    ctl._release_held()
    assert len(ctl.queue) == 0


async def test_a_released_key_whose_pass_writes_nothing_is_not_queued_again():
    """An instance being deleted returns before its status is paced: released once, it must
    not come back every time the queue runs dry (adv9: an endless loop froze the event loop)."""
    ctl = _controller()
    ctl.queue.add(B)
    ctl._pace_status(_instance(A), PENDING)
    ctl.queue.done(await ctl.queue.get())
    ctl._release_held()
    ctl.queue.done(await ctl.queue.get())  # a's pass: no status paced (deleting)
    ctl._release_held()
    assert len(ctl.queue) == 0
