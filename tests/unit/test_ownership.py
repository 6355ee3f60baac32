"""The ownership decisions (ownership.claim) and the contested-field check (diff.contested)."""

from __future__ import annotations

import pytest

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.diff import contested
from jupyternetes_ssa.ownership import (
    ADOPTED,
    CREATE_ONLY,
    OWNER,
    Owner,
    adopted,
    claim,
    conflict_message,
    guarded,
    owner_of,
    stamp,
)

ME = Owner("ns", "ann", "uid-ann")


def obj(annotations=None, labels_=None, managers=("someone",)) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "x",
            "namespace": "ns",
            "uid": "uid-x",
            "annotations": annotations or {},
            "labels": labels_ or {},
            "managedFields": [{"manager": m, "operation": "Apply"} for m in managers],
        },
    }


def alive(*uids: str):
    return lambda owner: owner.uid in uids


def recorded(owner: Owner, **extra) -> dict:
    return obj(
        {OWNER: owner.record, **extra}, {labels.MANAGED_BY: "jupyternetes-ssa"}, [FIELD_MANAGER]
    )


def test_an_absent_object_is_created():
    assert claim(None, ME, alive(), adopt=False).verdict == "create"


def test_an_object_recorded_for_this_instance_is_ours():
    assert claim(recorded(ME), ME, alive("uid-ann"), adopt=False).verdict == "mine"


def test_an_earlier_incarnation_that_is_gone_hands_over_to_the_new_one():
    earlier = Owner("ns", "ann", "uid-old")
    assert claim(recorded(earlier), ME, alive("uid-ann"), adopt=False).verdict == "successor"


@pytest.mark.parametrize("other_alive", [True, False])
def test_an_object_of_another_instance_is_never_ours_even_with_adopt(other_alive):
    bob = Owner("ns", "bob", "uid-bob")
    uids = ("uid-ann", "uid-bob") if other_alive else ("uid-ann",)
    decision = claim(recorded(bob), ME, alive(*uids), adopt=True)
    assert decision.verdict == "conflict" and not decision.allowed
    assert "JupyterNotebookInstance ns/bob" in decision.holder
    assert ("no longer exists" in decision.holder) is (not other_alive)


def test_same_name_in_another_namespace_is_another_instance():
    twin = Owner("other", "ann", "uid-ann")
    assert claim(recorded(twin), ME, alive("uid-ann"), adopt=False).verdict == "conflict"


def test_a_hand_made_object_is_a_conflict_unless_adopted():
    handmade = obj()
    decision = claim(handmade, ME, alive(), adopt=False)
    assert decision.verdict == "conflict" and "someone else" in decision.holder
    assert claim(handmade, ME, alive(), adopt=True).verdict == "adopt"


def test_an_object_from_before_owner_records_is_ours_by_its_labels_and_manager():
    legacy = obj(
        labels_={
            labels.MANAGED_BY: "jupyternetes-ssa",
            labels.INSTANCE: "ann",
            labels.INSTANCE_NAMESPACE: "ns",
        },
        managers=[FIELD_MANAGER],
    )
    assert claim(legacy, ME, alive(), adopt=False).verdict == "mine"
    forged = obj(labels_=legacy["metadata"]["labels"])  # our labels, not our field manager
    assert claim(forged, ME, alive(), adopt=False).verdict == "conflict"
    of_bob = obj(labels_=dict(legacy["metadata"]["labels"], **{labels.INSTANCE: "bob"}))
    of_bob["metadata"]["managedFields"] = [{"manager": FIELD_MANAGER}]
    assert claim(of_bob, ME, alive(), adopt=False).verdict == "conflict"
    assert claim(of_bob, ME, alive(), adopt=True).verdict == "conflict"  # never adopted


@pytest.mark.parametrize("value", ["", "a/b", "a/b/c/d", "//", "ns/ann/"])
def test_malformed_records_are_no_record(value):
    assert owner_of(obj({OWNER: value})) is None


def test_stamp_records_the_owner_and_keeps_adoption():
    desired = {"metadata": {"name": "x"}}
    stamp(desired, ME, None, "create")
    assert desired["metadata"]["annotations"] == {OWNER: "ns/ann/uid-ann"}
    stamp(desired, ME, obj(), "adopt")
    assert adopted(desired)
    again = {"metadata": {}}
    stamp(again, ME, obj({ADOPTED: "true"}), "mine")  # once adopted, always protected
    assert adopted(again)


def test_conflict_message_names_object_holder_and_fixes():
    text = conflict_message("Pod ns/x", "someone else", "notebook", adoptable=True)
    assert "Pod ns/x already exists and belongs to someone else" in text
    assert "resourceName" in text and "adopt: true" in text
    assert "adopt" not in conflict_message("Pod ns/x", "bob", "notebook", adoptable=False)


# --- contested ----------------------------------------------------------------------------


def live_with(*entries) -> dict:
    return {"metadata": {"managedFields": list(entries)}}


def entry(manager, fields, subresource=""):
    e = {"manager": manager, "operation": "Update", "fieldsV1": fields}
    if subresource:
        e["subresource"] = subresource
    return e


DESIRED = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "s", "labels": {"a": "1"}, "annotations": {"ours": "h"}},
    "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
}


def test_another_manager_holding_an_atomic_map_of_ours_is_contested():
    live = live_with(entry("kubectl-edit", {"f:spec": {"f:selector": {}}}))
    assert contested(DESIRED, live, FIELD_MANAGER) == ["spec.selector"]


def test_another_manager_holding_an_item_of_a_list_of_ours_is_contested():
    live = live_with(entry("x", {"f:spec": {"f:ports": {'k:{"port":81}': {".": {}}}}}))
    assert contested(DESIRED, live, FIELD_MANAGER) == ["spec.ports"]


@pytest.mark.parametrize(
    "fields",
    [
        {"f:metadata": {"f:labels": {".": {}, "f:other": {}}}},  # a key of its own in a map
        {"f:metadata": {"f:annotations": {"f:pv.kubernetes.io/bind-completed": {}}}},
        {"f:spec": {"f:volumeName": {}}},
    ],
)
def test_fields_of_its_own_are_not_contested(fields):
    assert contested(DESIRED, live_with(entry("controller", fields)), FIELD_MANAGER) == []


def test_our_own_and_subresource_entries_are_ignored():
    live = live_with(
        entry(FIELD_MANAGER, {"f:spec": {"f:selector": {}}}),
        entry("kubelet", {"f:spec": {"f:selector": {}}}, subresource="status"),
    )
    assert contested(DESIRED, live, FIELD_MANAGER) == []


def test_a_record_that_disagrees_with_the_object_is_no_record():
    """Tampered: another namespace than the object's, or an instance its labels do not name."""
    elsewhere = obj({OWNER: "other/ann/uid-ann"})
    assert owner_of(elsewhere) is None
    mislabelled = obj({OWNER: "ns/ann/uid-ann"}, {labels.INSTANCE: "bob"})
    assert owner_of(mislabelled) is None
    consistent = obj({OWNER: "ns/ann/uid-ann"}, {labels.INSTANCE: "ann"})
    assert owner_of(consistent) == ME


def test_an_adopted_object_gets_no_owner_reference():
    desired = {"metadata": {"ownerReferences": [{"uid": "uid-ann"}]}}
    stamp(desired, ME, obj(), "adopt")
    assert "ownerReferences" not in desired["metadata"]


@pytest.mark.parametrize(
    ("verdict", "guard"),
    [
        ("mine", {"uid": "uid-x"}),
        ("adopt", {"uid": "uid-x", "resourceVersion": "7"}),
        ("successor", {"uid": "uid-x", "resourceVersion": "7"}),
    ],
)
def test_guards_name_what_was_judged(verdict, guard):
    live = obj()
    live["metadata"]["resourceVersion"] = "7"
    sent = guarded({"metadata": {"name": "x"}}, live, verdict)["metadata"]
    assert {k: sent[k] for k in ("uid", "resourceVersion") if k in sent} == guard


def test_a_create_is_guarded_by_a_resource_version_no_object_has():
    sent = guarded({"metadata": {"name": "x"}}, None, "create")["metadata"]
    assert sent["resourceVersion"] == CREATE_ONLY == str(2**64 - 1)
    assert "uid" not in sent
