"""Events about an instance's objects that arrive during its own pass (controller._settle_events):
the watch of what the pass itself wrote is nothing new and costs no second pass (in a burst it
was one more render and two more apply plans for every new server); anything else re-queues it,
as before."""

from __future__ import annotations

import pytest

from jupyternetes_ssa import labels
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.types import InstanceResult, ItemOutcome, ObjectRef, RenderedItem

KEY = ("ns", "alice")


def _pvc(version: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "namespace": "ns",
            "name": "claim-alice",
            "resourceVersion": version,
            "labels": {labels.INSTANCE: "alice"},
        },
    }


def _item() -> RenderedItem:
    return RenderedItem(section="pvcs", item="home", manifest=_pvc(""))


async def _in_pass(ctl: Controller) -> None:
    """A worker has taken the instance: its pass runs."""
    ctl.by_label[("ns", "alice")] = KEY
    ctl.queue.add(KEY)
    assert await ctl.queue.get() == KEY
    assert ctl.queue.active(KEY)


def _wrote(ctl: Controller, live: dict) -> None:
    """What _process records of a pass that created `live`."""
    result = InstanceResult(ObjectRef("JupyterNotebookInstance", *KEY))
    result.outcomes = [ItemOutcome(_item(), "created", live)]
    ctl._written[KEY] = ctl._written_by(result)


def _controller() -> Controller:
    return Controller(None, Settings(namespaces=("ns",), leader_elect=False))


async def test_the_watch_of_our_own_create_during_the_pass_queues_nothing():
    ctl = _controller()
    await _in_pass(ctl)
    ctl._on_owned("ADDED", _pvc("100"), None)  # delivered before the apply's answer
    _wrote(ctl, _pvc("100"))
    ctl._settle_events(KEY)
    ctl.queue.done(KEY)
    assert len(ctl.queue) == 0
    assert not ctl._during and not ctl._written


@pytest.mark.parametrize(
    ("events", "wrote"),
    [
        # someone else's write after ours (e.g. the claim bound meanwhile)
        ([("ADDED", "100", None), ("MODIFIED", "101", "100")], "100"),
        # a deletion is news even at the version the pass wrote
        ([("DELETED", "100", None)], "100"),
        # a pass that returned early (its instance gone, labels pending) recorded no writes
        ([("ADDED", "100", None)], None),
    ],
    ids=["someone-elses-write", "a-deletion", "a-pass-that-wrote-nothing"],
)
async def test_any_other_event_during_the_pass_queues_it_again(events, wrote):
    ctl = _controller()
    await _in_pass(ctl)
    for kind, version, old in events:
        ctl._on_owned(kind, _pvc(version), old and _pvc(old))
    if wrote is not None:
        _wrote(ctl, _pvc(wrote))
    ctl._settle_events(KEY)
    ctl.queue.done(KEY)
    assert len(ctl.queue) == 1


async def test_a_failed_pass_keeps_its_backoff():
    """As before: an event about its own objects must not turn a retry into a loop."""
    ctl = _controller()
    await _in_pass(ctl)
    ctl._on_owned("MODIFIED", _pvc("101"), _pvc("100"))
    ctl._settle_events(KEY)
    ctl.queue.done(KEY, failed=True)
    assert len(ctl.queue) == 0  # only its backoff timer brings it back
    assert KEY in ctl.queue._timers


async def test_an_event_between_passes_queues_it_at_once():
    ctl = _controller()
    ctl.by_label[("ns", "alice")] = KEY
    ctl._on_owned("MODIFIED", _pvc("101"), _pvc("100"))
    assert len(ctl.queue) == 1
    assert not ctl._during
