"""An object whose owner record disagrees with its labels (a label edited by hand) is no one's:
garbage collection and spec.purge never take it for the instance its labels now name."""

from __future__ import annotations

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.observe import Observed
from jupyternetes_ssa.ownership import OWNER, disowned
from jupyternetes_ssa.prune import plan_prune, plan_purge


def pvc(name: str, label: str, record: str | None) -> dict:
    annotations = {labels.DELETION_POLICY: "Delete"}
    if record is not None:
        annotations[OWNER] = record
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": "jhub",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "labels": {
                labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                labels.INSTANCE: label,
                labels.PVC_ITEM: "workspace",
            },
            "annotations": annotations,
            "managedFields": [{"manager": FIELD_MANAGER, "operation": "Apply"}],
        },
    }


def instance(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "jhub", "uid": f"uid-{name}"}}


def observed(*objs: dict) -> Observed:
    seen = Observed(instances={("jhub", "bob"): instance("bob")}, complete=True)
    seen.pvcs.update({("jhub", o["metadata"]["name"]): o for o in objs})
    return seen


def test_a_record_that_disagrees_makes_it_no_ones():
    tampered = pvc("alice-workspace", "bob", "jhub/alice/uid-alice")
    assert disowned(tampered)
    assert not disowned(pvc("old", "bob", None))  # made before records: its labels decide
    assert not disowned(pvc("bob-workspace", "bob", "jhub/bob/uid-bob"))


def test_collection_and_purge_keep_a_disowned_object():
    tampered = pvc("alice-workspace", "bob", "jhub/alice/uid-alice")
    own = pvc("bob-old", "bob", "jhub/bob/uid-bob")
    seen = observed(tampered, own)
    planned = plan_prune(seen, {("jhub", "bob"): set()})
    assert [c.ref.name for c in planned] == ["bob-old"]
    assert [c.ref.name for c in plan_purge(seen, "jhub", "bob")] == ["bob-old"]
    orphaned = observed(pvc("alice-workspace", "nobody", "jhub/alice/uid-alice"))
    assert plan_prune(orphaned, {}) == []
