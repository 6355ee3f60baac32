"""A forged owner record against the real apiserver: objects made by hand (`kubectl create`)
with our labels and a copied owner record, for the instance's live uid or a dead earlier one,
are never applied to, mounted, deleted or purged, in once and continuous mode; the instance
reports the conflict and why. Our own objects, with the managers Kubernetes adds to them (PVC
binding, the kubelet's status), still reconcile, collect and purge as before."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from reconcile_helpers import condition, once, put, result_for, seed_instance, seed_template
from reconcile_helpers import status_of as status_of_

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.ownership import OWNER
from jupyternetes_ssa.settings import Settings

pytestmark = pytest.mark.integration

UNPROVEN = "not written by jupyternetes-ssa"


def _meta(namespace: str, name: str, instance: str, record: str) -> dict:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
            labels.INSTANCE: instance,
            labels.INSTANCE_NAMESPACE: namespace,
        },
        "annotations": {OWNER: record, labels.DELETION_POLICY: "Delete"},
    }


def forged_pvc(namespace: str, name: str, instance: str, record: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(namespace, name, instance, record),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def forged_pod(namespace: str, name: str, instance: str, record: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(namespace, name, instance, record),
        "spec": {"containers": [{"name": "notebook", "image": "busybox:1.36"}]},
    }


async def kubectl_create(kube: Kube, obj: dict) -> dict:
    """POST, under kubectl create's field manager: what a person making it by hand leaves."""
    res = PVC if obj["kind"] == "PersistentVolumeClaim" else POD
    return await kube.request(
        "POST",
        res,
        obj["metadata"]["namespace"],
        res.url(),
        content=json.dumps(obj).encode(),
        params={"fieldManager": "kubectl-create"},
    )


async def assert_untouched(kube: Kube, made: dict) -> None:
    """Still the hand-made object, with nothing of ours written to it (its resourceVersion may
    move: the volume controller binds a PVC, the kubelet writes a pod's status)."""
    res = PVC if made["kind"] == "PersistentVolumeClaim" else POD
    meta = made["metadata"]
    live = await kube.get(res, meta["namespace"], meta["name"])
    assert live is not None, f"{made['kind']} {meta['name']} was deleted"
    assert live["metadata"]["uid"] == meta["uid"]
    managers = {m["manager"] for m in live["metadata"].get("managedFields") or []}
    assert FIELD_MANAGER not in managers, managers
    annotations = live["metadata"]["annotations"]  # the binder adds its own
    assert {k: annotations.get(k) for k in meta["annotations"]} == meta["annotations"]
    assert labels.APPLIED_HASH not in annotations
    assert live["metadata"]["labels"] == meta["labels"]
    assert not live["metadata"].get("deletionTimestamp")


def assert_conflict(result, kind: str, namespace: str, name: str) -> None:
    assert result.reason == "NameConflict", (result.reason, result.error)
    assert f"{kind} {namespace}/{name} already exists" in result.error
    assert UNPROVEN in result.error and f"`{FIELD_MANAGER}`" in result.error
    assert f"or delete {kind} {namespace}/{name}" in result.error
    assert "adopt: true" in result.error and "resourceName" in result.error


async def assert_degraded(kube: Kube, namespace: str, name: str) -> None:
    degraded = condition(await status_of_(kube, namespace, name), "Degraded")
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "NameConflict"), degraded
    assert UNPROVEN in degraded["message"]


def collected_template(namespace: str) -> dict:
    template = seed_template(namespace)
    template["spec"]["pvcs"][0]["deletionPolicy"] = "Delete"  # so GC would delete it if ours
    return template


async def record_for(kube: Kube, namespace: str, name: str, incarnation: str) -> str:
    uid = (await kube.get(INSTANCE, namespace, name))["metadata"]["uid"]
    return f"{namespace}/{name}/{uid if incarnation == 'current' else 'uid-of-a-dead-one'}"


# --- once mode -------------------------------------------------------------------------------


@pytest.mark.parametrize("labelled", [True, False], ids=["listed", "read-after-guard"])
@pytest.mark.parametrize("incarnation", ["current", "earlier"])
async def test_once_a_forged_pvc_is_never_applied_mounted_nor_collected(
    cluster, namespace, incarnation, labelled
):
    """With our labels it is in the pass's lists; without, the create-only guard trips on it
    and it is read with a GET: judged alike."""
    kube = cluster.kube
    await put(kube, collected_template(namespace))
    await put(kube, seed_instance(namespace, "ann"))
    await put(kube, seed_instance(namespace, "bob"))  # positive control: our own objects
    record = await record_for(kube, namespace, "ann", incarnation)
    forged = forged_pvc(namespace, "ann-workspace", "ann", record)
    if not labelled:
        forged["metadata"]["labels"] = {"made-by": "hand"}
    made = await kubectl_create(kube, forged)

    summary = await once(kube, namespace)

    assert_conflict(result_for(summary, "ann"), "PersistentVolumeClaim", namespace, "ann-workspace")
    assert {o.action for o in result_for(summary, "ann").outcomes} == {"failed"}
    assert await kube.get(POD, namespace, "ann-notebook") is None  # never mounted
    assert result_for(summary, "bob").error == ""
    await assert_untouched(kube, made)
    await assert_degraded(kube, namespace, "ann")
    assert result_for(await once(kube, namespace), "ann").reason == "NameConflict"  # stays so

    await kube.delete(INSTANCE, namespace, "ann")
    await kube.delete(INSTANCE, namespace, "bob")
    summary = await once(kube, namespace)
    pruned = {c.ref.name for c in summary.pruned}
    assert "bob-workspace" in pruned  # collection ran, and took our own
    assert "ann-workspace" not in pruned
    await assert_untouched(kube, made)


@pytest.mark.parametrize("incarnation", ["current", "earlier"])
async def test_once_a_forged_pod_is_never_applied_replaced_nor_collected(
    cluster, namespace, incarnation
):
    kube = cluster.kube
    await put(kube, collected_template(namespace))
    await put(kube, seed_instance(namespace, "ann"))
    record = await record_for(kube, namespace, "ann", incarnation)
    made = await kubectl_create(kube, forged_pod(namespace, "ann-notebook", "ann", record))

    for recreate_pods in (False, True):  # not even re-created to apply a change
        summary = await once(kube, namespace, recreate_pods=recreate_pods)
        assert_conflict(result_for(summary, "ann"), "Pod", namespace, "ann-notebook")
        await assert_untouched(kube, made)
    assert await kube.get(PVC, namespace, "ann-workspace") is None  # nothing half-applied
    await assert_degraded(kube, namespace, "ann")

    await kube.delete(INSTANCE, namespace, "ann")
    summary = await once(kube, namespace)
    assert summary.pruned == []
    await assert_untouched(kube, made)


async def test_once_a_forged_pvc_is_adopted_only_on_request(cluster, namespace):
    """The fix the message names for a migration: `adopt: true` takes it over, marked adopted."""
    kube = cluster.kube
    template = collected_template(namespace)
    template["spec"]["pvcs"][0]["adopt"] = True
    await put(kube, template)
    await put(kube, seed_instance(namespace, "ann"))
    record = await record_for(kube, namespace, "ann", "earlier")
    made = await kubectl_create(kube, forged_pvc(namespace, "ann-workspace", "ann", record))

    summary = await once(kube, namespace)

    assert result_for(summary, "ann").error == ""
    live = await kube.get(PVC, namespace, "ann-workspace")
    assert live["metadata"]["uid"] == made["metadata"]["uid"]
    assert live["metadata"]["annotations"]["jupyternetes-ssa.kadense.io/adopted"] == "true"
    pod = await kube.get(POD, namespace, "ann-notebook")
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ann-workspace"


async def test_a_purge_deletes_its_own_and_never_a_forged_one(cluster, namespace):
    """A hand-made PVC carrying the instance's record and labels beside its real objects: the
    purge deletes the real ones, keeps the forged one, and finishes (Purged)."""
    kube = cluster.kube
    await put(kube, collected_template(namespace))
    await put(kube, seed_instance(namespace, "ann"))
    assert result_for(await once(kube, namespace), "ann").error == ""
    record = await record_for(kube, namespace, "ann", "current")
    made = await kubectl_create(kube, forged_pvc(namespace, "ann-extra", "ann", record))
    purging = seed_instance(namespace, "ann")
    purging["spec"]["purge"] = True
    await put(kube, purging)

    async def purged() -> bool:
        await once(kube, namespace)
        return (await status_of_(kube, namespace, "ann")).get("phase") == "Purged"

    await wait_for(purged, timeout=120, interval=1, message="ann Purged")
    for res, name in ((PVC, "ann-workspace"), (POD, "ann-notebook")):  # gone, or going
        live = await kube.get(res, namespace, name)
        assert live is None or live["metadata"].get("deletionTimestamp"), name
    await assert_untouched(kube, made)


# --- continuous mode -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(kube: Kube, namespace: str):
    settings = Settings(
        namespaces=(namespace,), key_namespace=namespace, resync_seconds=1.0, health_port=0
    )
    controller = Controller(kube, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        await wait_for(controller.synced, timeout=120, message="controller synced")
        yield controller
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def test_continuous_forged_pvcs_are_refused_kept_and_ours_still_collected(cluster, namespace):
    """In continuous mode (objects from the informers' caches, managedFields packed and folded):
    a forged PVC for ann's live uid and one for eve's dead earlier uid are refused and left as
    they are, and survive their instances; bob's own objects (PVC bound by the controller
    manager, pod with the kubelet's status) reconcile, and are collected when bob goes."""
    kube = cluster.kube
    await put(kube, collected_template(namespace))
    for name in ("ann", "eve"):
        await put(kube, seed_instance(namespace, name))
    made = [
        await kubectl_create(
            kube,
            forged_pvc(
                namespace, f"{name}-workspace", name, await record_for(kube, namespace, name, inc)
            ),
        )
        for name, inc in (("ann", "current"), ("eve", "earlier"))
    ]

    async with running(kube, namespace):
        await put(kube, seed_instance(namespace, "bob"))

        async def settled() -> bool:
            statuses = [await status_of_(kube, namespace, n) for n in ("ann", "eve", "bob")]
            degraded = [condition(s, "Degraded").get("reason") for s in statuses[:2]]
            ready = condition(statuses[2], "Ready").get("status")
            return degraded == ["NameConflict"] * 2 and ready == "True"

        await wait_for(settled, timeout=180, interval=0.5, message="conflicts reported, bob Ready")
        for name in ("ann", "eve"):
            await assert_degraded(kube, namespace, name)
            assert await kube.get(POD, namespace, f"{name}-notebook") is None
        for obj in made:
            await assert_untouched(kube, obj)

        async def others_wrote_bobs() -> bool:  # the binder's and the kubelet's entries
            pvc = await kube.get(PVC, namespace, "bob-workspace")
            pod = await kube.get(POD, namespace, "bob-notebook")
            managers = {m["manager"] for m in pvc["metadata"]["managedFields"]}
            return len(managers - {FIELD_MANAGER}) > 0 and any(
                m.get("subresource") == "status" for m in pod["metadata"]["managedFields"]
            )

        await wait_for(others_wrote_bobs, timeout=120, interval=0.5, message="bob's bound, run")
        assert condition(await status_of_(kube, namespace, "bob"), "Degraded").get("status") in (
            None,
            "False",
        )

        for name in ("ann", "eve", "bob"):
            await kube.delete(INSTANCE, namespace, name)

        async def bob_collected() -> bool:
            return await kube.get(PVC, namespace, "bob-workspace") is None

        await wait_for(bob_collected, timeout=180, interval=0.5, message="bob's PVC collected")
        for obj in made:
            await assert_untouched(kube, obj)
