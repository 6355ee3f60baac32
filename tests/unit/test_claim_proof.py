"""An owner record counts only on an object our field manager wrote (ownership.written_by_us)."""

from __future__ import annotations

import pytest

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.observe import cached
from jupyternetes_ssa.ownership import (
    OWNER,
    Owner,
    claim,
    managed_by_us,
    proven_owner,
    written_by_us,
)
from jupyternetes_ssa.prune import plan_purge, remaining
from jupyternetes_ssa.relabel import RELABEL_MANAGER

ME = Owner("ns", "ann", "uid-ann")
EARLIER = Owner("ns", "ann", "uid-gone")
BOB = Owner("ns", "bob", "uid-bob")


def entry(manager: str, operation: str = "Apply", subresource: str = "") -> dict:
    e = {
        "manager": manager,
        "operation": operation,
        "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:resources": {}}},
    }
    if subresource:
        e["subresource"] = subresource
    return e


def pvc(owner: Owner, *entries: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "x",
            "namespace": "ns",
            "uid": "uid-x",
            "resourceVersion": "1",
            "annotations": {OWNER: owner.record},
            "labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.INSTANCE: owner.name},
            "managedFields": list(entries),
        },
        "spec": {"resources": {"requests": {"storage": "1Gi"}}},
    }


def alive(*owners: Owner):
    return lambda o: o in owners


HAND = [entry("kubectl-create", "Update")], [entry("kubectl-client-side-apply", "Update")]


@pytest.mark.parametrize("entries", HAND)
@pytest.mark.parametrize("recorded", [ME, EARLIER])
def test_a_record_our_manager_did_not_write_is_a_conflict(entries, recorded):
    """A forged record for this instance's uid, or for a dead earlier one: never applied to."""
    forged = pvc(recorded, *entries)
    decision = claim(forged, ME, alive(ME), adopt=False)
    assert decision.verdict == "conflict" and not decision.allowed
    assert "not written by jupyternetes-ssa" in decision.holder
    assert f"field manager `{FIELD_MANAGER}`" in decision.holder
    assert recorded.record in decision.holder
    assert decision.adoptable
    assert proven_owner(forged) is None and not managed_by_us(forged)


def test_the_same_record_written_by_us_is_ours():
    assert claim(pvc(ME, entry(FIELD_MANAGER)), ME, alive(ME), adopt=False).verdict == "mine"
    earlier = pvc(EARLIER, entry(FIELD_MANAGER))
    assert claim(earlier, ME, alive(ME), adopt=False).verdict == "successor"


def test_managers_kubernetes_and_the_relabel_sweep_add_do_not_make_ours_a_conflict():
    """PVC binding (kube-controller-manager), the kubelet's status, our relabel sweep."""
    ours = pvc(
        ME,
        entry(FIELD_MANAGER),
        entry("kube-controller-manager", "Update"),
        entry("kubelet", "Update", subresource="status"),
        entry(RELABEL_MANAGER, "Update"),
    )
    assert claim(ours, ME, alive(ME), adopt=False).verdict == "mine"
    assert proven_owner(ours) == ME


def test_our_manager_only_through_a_subresource_proves_nothing():
    """Not our write (never collected), and beside another writer's entry, a conflict."""
    only_status = pvc(ME, entry(FIELD_MANAGER, "Update", subresource="status"))
    assert not written_by_us(only_status) and not managed_by_us(only_status)
    forged = pvc(ME, entry("kubectl-create", "Update"), *only_status["metadata"]["managedFields"])
    assert claim(forged, ME, alive(ME), adopt=False).verdict == "conflict"


@pytest.mark.parametrize(
    "managed_fields",
    [None, [], [{}], [entry("kubelet", "Update", subresource="status")]],
)
def test_cleared_managed_fields_are_no_evidence_either_way(managed_fields):
    """No writer on record: the record is believed (a running server whose pod was stripped
    keeps running), but nothing is collected or purged until our apply is on record again."""
    cleared = pvc(ME)
    cleared["metadata"]["managedFields"] = managed_fields
    assert claim(cleared, ME, alive(ME), adopt=False).verdict == "mine"
    assert proven_owner(cleared) == ME and not managed_by_us(cleared)


def test_cleared_then_written_by_another_is_a_conflict():
    rewritten = pvc(ME, entry("kubectl-label", "Update"))
    decision = claim(rewritten, ME, alive(ME), adopt=False)
    assert decision.verdict == "conflict" and "managedFields were cleared" in decision.holder
    assert claim(rewritten, ME, alive(ME), adopt=True).verdict == "adopt"  # the documented fix


@pytest.mark.parametrize("recorded", [ME, EARLIER, Owner("ns", "carol", "uid-gone")])
def test_adopt_takes_an_unproven_record_as_no_record(recorded):
    forged = pvc(recorded, entry("kubectl-create", "Update"))
    forged["metadata"]["labels"][labels.INSTANCE] = recorded.name
    assert claim(forged, ME, alive(ME), adopt=True).verdict == "adopt"


def test_adopt_never_takes_an_unproven_object_naming_another_live_instance():
    """It may be bob's own object with its managedFields cleared."""
    cleared = pvc(BOB)
    decision = claim(cleared, ME, alive(ME, BOB), adopt=True)
    assert decision.verdict == "conflict" and not decision.adoptable


def test_the_caches_keep_the_proof():
    """Continuous mode caches our objects packed and folded: our entry survives, and a
    hand-made one's absence of it too."""
    ours = pvc(ME, entry(FIELD_MANAGER), entry("kubelet", "Update", subresource="status"))
    kept = cached(ours)
    assert [m["manager"] for m in kept["metadata"]["managedFields"]] == [FIELD_MANAGER]
    assert claim(kept, ME, alive(ME), adopt=False).verdict == "mine"
    forged = cached(pvc(ME, entry("kubectl-create", "Update")))
    assert claim(forged, ME, alive(ME), adopt=False).verdict == "conflict"


class _Observed:
    """The part of observe.Observed that plan_purge and remaining read."""

    complete = True

    def __init__(self, *objs: dict):
        self.owned = {"PersistentVolumeClaim": {("ns", o["metadata"]["name"]): o for o in objs}}
        self.instances = {ME.key: {"metadata": {"name": "ann", "uid": ME.uid}}}


def test_a_purge_neither_deletes_nor_waits_for_a_forged_object():
    forged = pvc(ME, entry("kubectl-create", "Update"))
    observed = _Observed(forged)
    assert plan_purge(observed, "ns", "ann") == []
    assert remaining(observed, "ns", "ann") == 0
    ours = pvc(ME, entry(FIELD_MANAGER))
    ours["metadata"]["name"] = "y"
    observed = _Observed(forged, ours)
    assert [c.ref.name for c in plan_purge(observed, "ns", "ann")] == ["y"]
    assert remaining(observed, "ns", "ann") == 1
