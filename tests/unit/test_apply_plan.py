"""apply.py's pure helpers: the manifest we send (`stamped`) and whether live is `is_current`."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from jupyternetes_ssa import labels
from jupyternetes_ssa.apply import (
    Plan,
    _forbidden_in_place,
    _pending,
    is_current,
    manifest_hash,
    stamped,
)
from jupyternetes_ssa.kube import ApiError
from jupyternetes_ssa.render import render
from jupyternetes_ssa.types import RenderedItem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def seed_items() -> dict[str, RenderedItem]:
    template = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
    instance = yaml.safe_load((EXAMPLES / "seed-instance.yaml").read_text())
    instance["metadata"]["uid"] = "instance-uid"
    return {i.section: i for i in render(template, instance).items}


ITEMS = seed_items()
POD, PVC = ITEMS["pods"], ITEMS["pvcs"]


def hash_of(manifest: dict) -> str:
    return manifest["metadata"]["annotations"][labels.APPLIED_HASH]


def with_manifest(item: RenderedItem, manifest: dict, **kw) -> RenderedItem:
    return dataclasses.replace(item, manifest=manifest, **kw)


def live_pod(desired: dict) -> dict:
    """What the apiserver returns for `desired`: defaults, admission additions, status."""
    live = copy.deepcopy(desired)
    meta = live["metadata"]
    meta.update(
        uid="pod-uid",
        resourceVersion="42",
        creationTimestamp="2024-01-01T00:00:00Z",
        managedFields=[{"manager": "jupyternetes-ssa", "operation": "Apply"}],
    )
    meta["annotations"]["kubectl.kubernetes.io/restartedAt"] = "someone else's"
    spec = live["spec"]
    spec.update(
        dnsPolicy="ClusterFirst",
        restartPolicy="Always",
        schedulerName="default-scheduler",
        serviceAccountName="default",
        enableServiceLinks=True,
        tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
        nodeName="node-1",
    )
    for c in spec["containers"]:
        c.update(imagePullPolicy="IfNotPresent", terminationMessagePolicy="File", resources={})
        c["ports"][0].setdefault("protocol", "TCP")
        c["volumeMounts"].append({"name": "kube-api-access-abc", "mountPath": "/var/run/secrets"})
    spec["volumes"].append({"name": "kube-api-access-abc", "projected": {"sources": []}})
    live["status"] = {"phase": "Running", "podIP": "10.0.0.5"}
    return live


def live_pvc(desired: dict) -> dict:
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="pvc-uid", resourceVersion="7")
    live["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = "yes"
    live["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection"]
    live["spec"].update(storageClassName="standard", volumeMode="Filesystem", volumeName="pv-1")
    live["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    return live


# --- stamped -----------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [POD, PVC], ids=["pod", "pvc"])
def test_stamped_adds_a_hash_annotation(item: RenderedItem) -> None:
    value = hash_of(stamped(item))
    assert isinstance(value, str)
    assert len(value) == 16
    int(value, 16)  # hexadecimal


@pytest.mark.parametrize("item", [POD, PVC], ids=["pod", "pvc"])
def test_stamped_is_deterministic(item: RenderedItem) -> None:
    again = with_manifest(item, copy.deepcopy(item.manifest))
    assert stamped(item) == stamped(item) == stamped(again)


def test_stamped_hash_does_not_depend_on_key_order() -> None:
    reordered = dict(reversed(list(POD.manifest.items())))
    reordered["metadata"] = dict(reversed(list(POD.manifest["metadata"].items())))
    assert list(reordered) != list(POD.manifest)
    assert hash_of(stamped(with_manifest(POD, reordered))) == hash_of(stamped(POD))


def test_stamped_hash_changes_with_the_manifest() -> None:
    changed = copy.deepcopy(POD.manifest)
    changed["spec"]["containers"][0]["image"] = "quay.io/jupyter/base-notebook:latest"
    assert hash_of(stamped(with_manifest(POD, changed))) != hash_of(stamped(POD))
    relabelled = copy.deepcopy(POD.manifest)
    relabelled["metadata"]["labels"]["extra"] = "x"
    assert hash_of(stamped(with_manifest(POD, relabelled))) != hash_of(stamped(POD))


def test_stamped_hash_is_the_hash_of_everything_else_we_send() -> None:
    desired = stamped(PVC)
    without = copy.deepcopy(desired)
    value = without["metadata"]["annotations"].pop(labels.APPLIED_HASH)
    assert value == manifest_hash(without)


def test_stamped_keeps_the_rendered_manifest_and_admin_annotations() -> None:
    manifest = copy.deepcopy(POD.manifest)
    manifest["metadata"]["annotations"] = {"hub.jupyter.org/username": "jovyan"}
    desired = stamped(with_manifest(POD, manifest))
    assert desired["metadata"]["annotations"]["hub.jupyter.org/username"] == "jovyan"
    without = copy.deepcopy(desired)
    del without["metadata"]["annotations"][labels.APPLIED_HASH]
    assert without == manifest


def test_stamped_does_not_modify_the_item() -> None:
    before = copy.deepcopy(POD.manifest)
    stamped(POD)
    assert POD.manifest == before
    assert "annotations" not in POD.manifest["metadata"]


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_stamped_pvc_records_its_deletion_policy(policy: str) -> None:
    desired = stamped(with_manifest(PVC, PVC.manifest, deletion_policy=policy))
    assert desired["metadata"]["annotations"][labels.DELETION_POLICY] == policy


def test_stamped_seed_pvc_is_retained_by_default() -> None:
    assert stamped(PVC)["metadata"]["annotations"][labels.DELETION_POLICY] == "Retain"


def test_stamped_pvc_hash_changes_with_the_policy() -> None:
    retain = stamped(with_manifest(PVC, PVC.manifest, deletion_policy="Retain"))
    delete = stamped(with_manifest(PVC, PVC.manifest, deletion_policy="Delete"))
    assert hash_of(retain) != hash_of(delete)


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_stamped_pod_has_no_deletion_policy(policy: str) -> None:
    desired = stamped(with_manifest(POD, POD.manifest, deletion_policy=policy))
    assert labels.DELETION_POLICY not in desired["metadata"]["annotations"]


# --- is_current --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "live_of"), [(POD, live_pod), (PVC, live_pvc)], ids=["pod", "pvc"]
)
def test_is_current_with_only_server_additions(item: RenderedItem, live_of) -> None:
    desired = stamped(item)
    assert is_current(desired, live_of(desired)) is True


def test_is_current_false_without_a_live_object() -> None:
    assert is_current(stamped(POD), None) is False


def test_is_current_false_while_deleting() -> None:
    desired = stamped(POD)
    live = live_pod(desired)
    live["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert is_current(desired, live) is False


def test_is_current_false_when_the_hash_differs() -> None:
    desired = stamped(POD)
    live = live_pod(desired)
    live["metadata"]["annotations"][labels.APPLIED_HASH] = "0" * 16
    assert is_current(desired, live) is False


def test_is_current_false_when_the_template_changed() -> None:
    old = stamped(POD)
    changed = copy.deepcopy(POD.manifest)
    changed["spec"]["containers"][0]["env"][0]["value"] = "new-token"
    assert is_current(stamped(with_manifest(POD, changed)), live_pod(old)) is False


@pytest.mark.parametrize("annotations", [None, {}, {"other": "x"}])
def test_is_current_false_without_our_hash(annotations: dict | None) -> None:
    desired = stamped(POD)
    live = live_pod(desired)
    live["metadata"]["annotations"] = annotations
    assert is_current(desired, live) is False


def test_is_current_false_when_a_value_we_set_drifted() -> None:
    desired = stamped(POD)
    live = live_pod(desired)
    live["spec"]["containers"][0]["image"] = "edited-by-hand"
    assert is_current(desired, live) is False


def test_is_current_false_when_a_label_we_set_was_removed() -> None:
    desired = stamped(PVC)
    live = live_pvc(desired)
    del live["metadata"]["labels"][labels.MANAGED_BY]
    assert is_current(desired, live) is False


def test_is_current_false_when_the_deletion_policy_annotation_was_changed() -> None:
    desired = stamped(PVC)
    live = live_pvc(desired)
    live["metadata"]["annotations"][labels.DELETION_POLICY] = "Delete"
    assert is_current(desired, live) is False


def test_is_current_compares_resources_by_value() -> None:
    manifest = copy.deepcopy(POD.manifest)
    manifest["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "0.5", "memory": "1024Mi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }
    desired = stamped(with_manifest(POD, manifest))
    live = live_pod(desired)
    live["spec"]["containers"][0]["resources"] = {  # the apiserver's canonical forms
        "limits": {"cpu": "500m", "memory": "1Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }
    assert is_current(desired, live) is True
    live["spec"]["containers"][0]["resources"]["limits"]["memory"] = "2Gi"
    assert is_current(desired, live) is False


def test_is_current_pvc_storage_by_value() -> None:
    desired = stamped(PVC)
    live = live_pvc(desired)
    live["spec"]["resources"]["requests"]["storage"] = "1024Mi"
    assert is_current(desired, live) is True


# --- _forbidden_in_place / _pending --------------------------------------------------------------


def api_error(status: int, *reasons: str) -> ApiError:
    causes = [{"reason": r, "field": f"spec.f{i}"} for i, r in enumerate(reasons)]
    return ApiError(status, "Invalid", "Pod is invalid", {"details": {"causes": causes}})


def test_forbidden_in_place_needs_a_live_object_and_only_forbidden_causes() -> None:
    live = live_pod(stamped(POD))
    forbidden = api_error(422, "FieldValueForbidden", "FieldValueForbidden")
    assert _forbidden_in_place(forbidden, live) is True
    assert _forbidden_in_place(forbidden, None) is False
    assert (
        _forbidden_in_place(api_error(422, "FieldValueForbidden", "FieldValueInvalid"), live)
        is False
    )
    assert _forbidden_in_place(api_error(422), live) is False
    assert _forbidden_in_place(api_error(409, "FieldValueForbidden"), live) is False


def test_pending_names_the_changed_spec_field() -> None:
    old = stamped(POD)
    live = copy.deepcopy(old)
    live["metadata"].update(uid="u", resourceVersion="1")
    changed = copy.deepcopy(POD.manifest)
    changed["spec"]["containers"][0]["image"] = "new-image"
    item = with_manifest(POD, changed)
    outcome = _pending(Plan(item, stamped(item), live), api_error(422, "FieldValueForbidden"))
    assert outcome.action == "pending"
    assert outcome.live is live
    assert outcome.message == "Pod is invalid"
    assert outcome.fields == ("spec.containers[0].image",)


def test_pending_does_not_name_server_defaults() -> None:
    live = live_pod(stamped(POD))
    changed = copy.deepcopy(POD.manifest)
    changed["spec"]["containers"][0]["image"] = "new-image"
    item = with_manifest(POD, changed)
    outcome = _pending(Plan(item, stamped(item), live), api_error(422, "FieldValueForbidden"))
    assert outcome.fields == ("spec.containers[0].image",)
