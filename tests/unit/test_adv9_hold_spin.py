"""adv9: the status hold's release (controller._release_held) re-queues every held key each time
the queue runs dry, and a key leaves the held set only in a pass that paces its status. A held
instance whose passes return before that (deleting, labels of its namespace still pending)
is re-queued for ever, by passes that never yield: the event loop freezes. No cluster needed:
these passes return before any request (tests/integration/test_adv9_status_hold.py shows the
same against a real apiserver)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.settings import Settings

K, OTHER = ("ns", "k"), ("ns", "other")
PENDING = {"phase": "Pending"}


def _instance(**meta) -> dict:
    return {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookInstance",
        "metadata": {"namespace": "ns", "name": "k", "uid": "u", **meta},
        "spec": {"template": {"name": "t", "namespace": "catalog"}, "variables": {}},
    }


def _held(ctl: Controller) -> None:
    """k's progress falls due while another key waits: held (as in a burst)."""
    ctl._status_clock[K] = time.monotonic() - 3600
    ctl.queue.add(OTHER)
    assert ctl._pace_status(_instance(), PENDING) > 0 and K in ctl._status_held


class _Breaker(threading.Thread):
    """Counts passes from another thread; past `limit`, empties the held set to end a spin."""

    def __init__(self, ctl: Controller, limit: int = 200):
        super().__init__(daemon=True)
        self.ctl, self.limit, self.fired, self.stop = ctl, limit, False, threading.Event()
        self.passes = 0

    def run(self) -> None:
        while not self.stop.wait(0.05):
            if self.passes > self.limit:
                self.fired = True
                self.ctl._status_held.clear()


async def _run_worker_until_idle(ctl: Controller, breaker: _Breaker) -> BaseException | None:
    """Run one worker until the queue is idle; what killed the worker, if anything did."""
    process = ctl._process

    async def counted(key):
        breaker.passes += 1
        return await process(key)

    ctl._process = counted
    breaker.start()
    worker = asyncio.create_task(ctl._worker())
    try:
        deadline = time.monotonic() + 30
        while (len(ctl.queue) or ctl.queue._active) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # lets the worker run; a spin never gives this back
    finally:
        breaker.stop.set()
        breaker.join()
        died = worker.done() and not worker.cancelled() and worker.exception()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    return died or None


@pytest.mark.parametrize(
    "state",
    ["deleting", "labels pending"],
)
async def test_a_held_instance_whose_pass_paces_nothing_is_not_requeued_for_ever(state):
    ctl = Controller(None, Settings(namespaces=("ns",), leader_elect=False))
    _held(ctl)
    if state == "deleting":  # e.g. the spawner's Foreground stop, until its pods are gone
        ctl.observed.instances[K] = _instance(deletionTimestamp="2026-01-01T00:00:00Z")
    else:  # its template is in another namespace whose labels are being listed
        ctl.observed.instances[K] = _instance()
        ctl._namespaces_asked = asyncio.get_running_loop().create_future()  # asked, not done
    ctl.queue.add(K)
    breaker = _Breaker(ctl)
    died = await _run_worker_until_idle(ctl, breaker)
    ctl._namespaces_asked = None
    assert died is None, f"the worker died after {breaker.passes} passes: {died!r}"
    assert breaker.passes < 50, f"{breaker.passes} passes: an endless re-queue loop"


async def test_a_held_instance_that_is_gone_leaves_the_held_set():
    """Held: an instance deleted while held (no longer in the cache) is discarded by its
    next pass, and the queue runs dry."""
    ctl = Controller(None, Settings(namespaces=("ns",), leader_elect=False))
    _held(ctl)
    ctl.queue.add(K)  # nothing of k is cached: its pass (a prune) sends no request
    breaker = _Breaker(ctl)
    assert await _run_worker_until_idle(ctl, breaker) is None
    assert breaker.passes < 50 and K not in ctl._status_held and len(ctl.queue) == 0


async def test_a_key_failing_for_ever_keeps_a_capped_backoff():
    from jupyternetes_ssa.queue import WorkQueue

    queue = WorkQueue(1.0, 300.0)
    delays = []
    for _ in range(1100):
        queue.add(K)
        assert await queue.get() == K
        delays.append(queue.done(K, failed=True))
    assert max(delays) == 300.0
    queue._timers.pop(K).cancel()
