"""adv10: events judged when an instance's pass ends (controller._settle_events) against the
queue's own rules. A pass can leave a timer for its key (a progress status held back), and
`WorkQueue.nudge` takes a key with a timer and a failure on record for one waiting out its
backoff: the deferred nudge was dropped, so a deletion seen during the pass waited for that
timer (up to a minute) where it used to re-queue the instance at once."""

from __future__ import annotations

from test_settle_events import KEY, _controller, _in_pass, _pvc, _wrote


async def _failed_once(ctl) -> None:
    """The key failed before (a conflict, an apiserver error) and its retry came round."""
    await _in_pass(ctl)
    ctl.queue.done(KEY, failed=True)
    ctl.queue._timers.pop(KEY).cancel()
    ctl.queue._fire(KEY)  # the retry timer fires: queued again, failure still on record


async def test_a_deletion_during_a_pass_that_holds_its_status_queues_it_at_once():
    ctl = _controller()
    await _failed_once(ctl)
    assert await ctl.queue.get() == KEY  # the retry runs, and succeeds this time
    ctl._on_owned("DELETED", _pvc("100"), None)  # the user deleted the claim meanwhile
    _wrote(ctl, _pvc("100"))
    ctl.queue.add_after(KEY, 60.0)  # _process: a progress status held back (status_due)
    ctl._settle_events(KEY)
    ctl.queue.done(KEY)
    assert len(ctl.queue) == 1, "the deletion waits for the status timer"


async def test_an_event_during_a_failed_pass_still_waits_for_the_backoff():
    """The other side of it: a failed pass is not brought back by its own events."""
    ctl = _controller()
    await _failed_once(ctl)
    assert await ctl.queue.get() == KEY
    ctl._on_owned("MODIFIED", _pvc("101"), _pvc("100"))
    ctl._settle_events(KEY)
    ctl.queue.done(KEY, failed=True)
    assert len(ctl.queue) == 0 and KEY in ctl.queue._timers
