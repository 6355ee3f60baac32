"""Garbage collection against a real apiserver: what goes, what stays, and what is never touched."""

from __future__ import annotations

import pytest
from reconcile_helpers import once, owned, put, seed_instance, seed_template

from jupyternetes_ssa import labels
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for

pytestmark = pytest.mark.integration


def with_extras(template: dict) -> dict:
    """The seed template plus a sidecar pod and a scratch PVC whose policy is Delete."""
    template["spec"]["pods"].append(
        {
            "name": "sidecar",
            "spec": {
                "containers": [
                    {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "infinity"]}
                ]
            },
        }
    )
    template["spec"]["pvcs"].append(
        {
            "name": "scratch",
            "deletionPolicy": "Delete",
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    return template


async def names(kube: Kube, ns: str, instance: str) -> tuple[set[str], set[str]]:
    pods, pvcs = await owned(kube, ns, instance)
    return (
        {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")},
        {p["metadata"]["name"] for p in pvcs if not p["metadata"].get("deletionTimestamp")},
    )


async def test_deleted_instance_loses_its_pod_but_keeps_its_pvc_for_the_next_start(
    kube: Kube, namespace: str
):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))
    assert (await once(kube, namespace)).ok
    pvc_uid = (await kube.get(PVC, namespace, "jovyan-workspace"))["metadata"]["uid"]

    await kube.delete(INSTANCE, namespace, "jovyan")
    summary = await once(kube, namespace)

    assert [str(c.ref) for c in summary.kept] == [
        f"PersistentVolumeClaim {namespace}/jovyan-workspace"
    ]
    await wait_for(
        lambda: _gone(kube, POD, namespace, "jovyan-notebook"),
        timeout=90,
        message="orphaned pod gone",
    )
    assert (await kube.get(PVC, namespace, "jovyan-workspace"))["metadata"]["uid"] == pvc_uid

    await put(kube, seed_instance(namespace, "jovyan"))
    summary = await once(kube, namespace)

    assert summary.ok
    assert (await kube.get(PVC, namespace, "jovyan-workspace"))["metadata"]["uid"] == pvc_uid


async def _gone(kube: Kube, res, ns: str, name: str) -> bool:
    live = await kube.get(res, ns, name)
    return live is None or bool(live["metadata"].get("deletionTimestamp"))


async def test_items_removed_from_the_template_are_pruned_by_policy(kube: Kube, namespace: str):
    await put(kube, with_extras(seed_template(namespace)))
    await put(kube, seed_instance(namespace, "jovyan"))
    assert (await once(kube, namespace)).ok
    assert await names(kube, namespace, "jovyan") == (
        {"jovyan-notebook", "jovyan-sidecar"},
        {"jovyan-workspace", "jovyan-scratch"},
    )

    await put(kube, seed_template(namespace))  # sidecar and scratch removed
    dry = await once(kube, namespace, dry_run=True)

    assert {c.ref.name for c in dry.pruned} == {"jovyan-sidecar", "jovyan-scratch"}
    assert await names(kube, namespace, "jovyan") == (
        {"jovyan-notebook", "jovyan-sidecar"},
        {"jovyan-workspace", "jovyan-scratch"},
    )

    summary = await once(kube, namespace)

    assert {c.ref.name for c in summary.pruned} == {"jovyan-sidecar", "jovyan-scratch"}
    assert all("no longer lists item" in c.reason for c in summary.pruned)
    await wait_for(
        lambda: _names_are(kube, namespace, "jovyan", ({"jovyan-notebook"}, {"jovyan-workspace"})),
        timeout=90,
        message="extras pruned",
    )


async def _names_are(kube, ns, instance, expected) -> bool:
    return await names(kube, ns, instance) == expected


async def test_objects_of_an_instance_whose_template_breaks_are_protected(
    kube: Kube, namespace: str
):
    template = with_extras(seed_template(namespace))
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))
    assert (await once(kube, namespace)).ok

    template["spec"]["pods"] = [
        {
            "name": "notebook",
            "spec": {"containers": [{"name": "notebook", "image": "{no.such.variable}"}]},
        }
    ]
    template["spec"]["pvcs"] = []
    await put(kube, template)
    summary = await once(kube, namespace)

    assert summary.pruned == [] and summary.kept == []
    assert await names(kube, namespace, "jovyan") == (
        {"jovyan-notebook", "jovyan-sidecar"},
        {"jovyan-workspace", "jovyan-scratch"},
    )


async def test_objects_we_did_not_apply_are_never_collected(kube: Kube, namespace: str):
    """A pod that merely carries our label (someone else's field manager) is not ours."""
    impostor = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "impostor",
            "namespace": namespace,
            "labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.INSTANCE: "nobody"},
        },
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }
    await put(kube, impostor)

    summary = await once(kube, namespace)

    assert summary.pruned == []
    assert await kube.get(POD, namespace, "impostor") is not None
