"""Hostile review of sharding's bucket label (README, "Sharding: beyond one reconciler").

Everything we create carries `jupyternetes-ssa.kadense.io/shard-bucket`; a shard whose N divides
256 lists and watches only its buckets. These tests try to lure a shard onto objects that are not
its own, hide its own objects from it, re-shard under it and feed it hostile names, against the
real apiserver. Writes are recorded by a `Kube` that notes every non-GET request it sends
(instrumentation only: every request still reaches the real apiserver).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from jupyternetes_ssa import labels
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.observe import owned_selector
from jupyternetes_ssa.ownership import OWNER
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import Shard, bucket_of, shard_of
from tests.integration.reconcile_helpers import (
    edited,
    once,
    put,
    result_for,
    seed_instance,
    seed_template,
)

BUCKET = labels.SHARD_BUCKET


class Recording(Kube):
    """The real client, noting every write it sends (method, path): which shard wrote what."""

    def __init__(self, base: Kube):
        super().__init__(base.api)
        self.http, self._discovered = base.http, base._discovered  # one connection pool
        self.writes: list[tuple[str, str]] = []

    async def request(self, method, res, namespace, url, **kwargs):
        if method != "GET":
            self.writes.append((method, f"{namespace}/{url}"))
        return await super().request(method, res, namespace, url, **kwargs)

    def touched(self, name: str) -> list[tuple[str, str]]:
        """Writes to an object of this name (its own path or a subresource of it)."""
        return [w for w in self.writes if w[1].split("/")[-1] == name or f"/{name}/" in w[1]]


def name_in(prefix: str, namespace: str, index: int, count: int, skip: int = 0) -> str:
    """A fresh instance name served by shard index/count (the `skip`-th such)."""
    found = 0
    for n in range(10_000):
        name = f"{prefix}{n}"
        if shard_of(namespace, name, count) == index:
            if found == skip:
                return name
            found += 1
    raise AssertionError("no name found")


def other_bucket(namespace: str, name: str, count: int) -> str:
    """A bucket value of another shard than the instance's, among `count`."""
    mine = int(bucket_of(namespace, name))
    return str((mine + 1) % 256) if count > 1 else str(mine)


async def label_by_hand(kube: Kube, res, namespace: str, name: str, value: str | None) -> dict:
    """`kubectl label --overwrite` (a merge patch by another manager); None removes the label."""
    plural = "pods" if res is POD else "persistentvolumeclaims"
    path = f"/api/v1/namespaces/{namespace}/{plural}/{name}"
    body = {"metadata": {"labels": {BUCKET: value}}}
    return await kube.call(
        "PATCH",
        path,
        body=body,
        params={"fieldManager": "kubectl-label"},
        content_type="application/merge-patch+json",
    )


async def shard_pass(kube: Kube, namespace: str, index: int, count: int, **kw):
    return await once(kube, namespace, shard=Shard(index, count), **kw)


async def setup_two(cluster, namespace: str, count: int = 2):
    """A template and two instances, `a` of shard 0 and `b` of shard 1 (of `count`)."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, count)
    b = name_in("b", namespace, 1, count)
    for name in (a, b):
        await put(kube, seed_instance(namespace, name))
    for i in range(count):
        await shard_pass(kube, namespace, i, count)
    return a, b


def bucket(obj: dict | None) -> str | None:
    return ((obj or {}).get("metadata", {}).get("labels") or {}).get(BUCKET)


# --- a bucket label edited by hand -------------------------------------------------------------


@pytest.mark.parametrize("value", ["other-shard", None, "garbage", ""])
async def test_once_relabelled_objects_restored_by_owner_only(cluster, namespace, value):
    """A pod's and a PVC's bucket label set to another shard's bucket, removed, set to garbage
    or emptied: the other shard never writes to them; the owner (by owner record) puts the
    label back in one pass, same uid, and its instance reports no error."""
    kube = cluster.kube
    a, b = await setup_two(cluster, namespace)
    pod, pvc = f"{a}-notebook", f"{a}-workspace"
    before = {res.kind: await kube.get(res, namespace, n) for res, n in ((POD, pod), (PVC, pvc))}
    assert (
        bucket(before["Pod"]) == bucket_of(namespace, a) == bucket(before["PersistentVolumeClaim"])
    )
    new = other_bucket(namespace, a, 2) if value == "other-shard" else value
    edited_objs = {
        "Pod": await label_by_hand(kube, POD, namespace, pod, new),
        "PersistentVolumeClaim": await label_by_hand(kube, PVC, namespace, pvc, new),
    }

    other = Recording(kube)
    summary = await shard_pass(other, namespace, 1, 2)
    assert [r.instance.name for r in summary.instances] == [b]
    assert not summary.pruned
    assert not other.touched(pod) and not other.touched(pvc), other.writes
    for res, n in ((POD, pod), (PVC, pvc)):
        live = await kube.get(res, namespace, n)
        assert (
            live["metadata"]["resourceVersion"]
            == (edited_objs[res.kind]["metadata"]["resourceVersion"])
        )

    owner = Recording(kube)
    summary = await shard_pass(owner, namespace, 0, 2)
    assert [r.instance.name for r in summary.instances] == [a]
    assert result_for(summary, a).error == "", result_for(summary, a).error
    assert not summary.pruned
    for res, n in ((POD, pod), (PVC, pvc)):
        live = await kube.get(res, namespace, n)
        assert live["metadata"]["uid"] == before[res.kind]["metadata"]["uid"]
        assert bucket(live) == bucket_of(namespace, a), (n, live["metadata"]["labels"])
    # and the next pass selects again: nothing of ours is left without its bucket
    settings = Settings(namespaces=(namespace,), shard=Shard(0, 2), key_namespace=namespace)
    selector = await owned_selector(kube, settings, [PVC, POD])
    assert BUCKET in selector


async def _controller(kube: Kube, namespace: str, index: int, count: int, **kw):
    settings = Settings(
        namespaces=(namespace,),
        key_namespace=namespace,
        shard=Shard(index, count),
        health_port=0,
        status_interval_seconds=0.2,
        **kw,
    )
    stop = asyncio.Event()
    controller = Controller(kube, settings)
    task = asyncio.create_task(controller.run(stop))
    await wait_for(lambda: controller.synced() or task.done(), timeout=60, message="synced")
    assert not task.done(), "controller ended early"
    return controller, stop, task


async def _stop(*runs) -> None:
    for _, stop, _task in runs:
        stop.set()
    for *_, task in runs:
        assert await asyncio.wait_for(task, 60) == 0


async def test_continuous_relabelled_pod_restored_by_owner_other_silent(cluster, namespace):
    """Two shards running; a pod's bucket label moved to the other shard's bucket, then removed:
    its owner restores it each time (same uid), the other shard sends it nothing."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, 2)
    b = name_in("b", namespace, 1, 2)
    k0, k1 = Recording(kube), Recording(kube)
    runs = [await _controller(k0, namespace, 0, 2), await _controller(k1, namespace, 1, 2)]
    try:
        for name in (a, b):
            await put(kube, seed_instance(namespace, name))
        pod = f"{a}-notebook"
        first = await wait_for(
            lambda: kube.get(POD, namespace, pod), timeout=60, message=f"pod {pod}"
        )
        await wait_for(lambda: kube.get(POD, namespace, f"{b}-notebook"), timeout=60)
        for value in (other_bucket(namespace, a, 2), None, "x"):
            await label_by_hand(kube, POD, namespace, pod, value)

            async def restored():
                live = await kube.get(POD, namespace, pod)
                return live if bucket(live) == bucket_of(namespace, a) else None

            live = await wait_for(restored, timeout=60, message=f"{pod} label back ({value})")
            assert live["metadata"]["uid"] == first["metadata"]["uid"]
        assert not k1.touched(pod), k1.writes
        assert not k1.touched(a), k1.writes
        assert not k0.touched(b), k0.writes
    finally:
        await _stop(*runs)


# --- lures: objects that look like a shard's own -----------------------------------------------


async def test_hand_made_pod_with_our_labels_lures_no_shard(cluster, namespace):
    """A pod made by hand with our managed-by label, the bucket and instance label of shard 0's
    instance (no owner record): not collected, not applied to, by either shard; when it takes
    the name the instance wants, the instance says NameConflict and the pod is left alone."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, 2)
    lure_labels = {
        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.INSTANCE: a,
        labels.INSTANCE_NAMESPACE: namespace,
        labels.POD_ITEM: "notebook",
        BUCKET: bucket_of(namespace, a),
    }

    def lure(name: str) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": lure_labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }

    stray = await put(kube, lure("stray"))
    unbucketed = lure("unbucketed")  # no bucket: every shard lists all of ours while it exists
    unbucketed["metadata"]["labels"] = {k: v for k, v in lure_labels.items() if k != BUCKET}
    unbucketed = await put(kube, unbucketed)
    squatter = await put(kube, lure(f"{a}-notebook"))
    await put(kube, seed_instance(namespace, a))
    writers = [Recording(kube), Recording(kube)]
    for i, k in enumerate(writers):
        summary = await shard_pass(k, namespace, i, 2)
        assert not summary.pruned
    result = result_for(summary := await shard_pass(writers[0], namespace, 0, 2), a)
    assert result.reason == "NameConflict", result.error
    for obj in (stray, squatter, unbucketed):  # the node runs them (status changes): not ours
        live = await kube.get(POD, namespace, obj["metadata"]["name"])
        assert live["metadata"]["uid"] == obj["metadata"]["uid"]
        assert live["metadata"]["labels"] == obj["metadata"]["labels"]
        assert OWNER not in (live["metadata"].get("annotations") or {})
        managers = {m["manager"] for m in live["metadata"]["managedFields"]}
        assert "jupyternetes-ssa" not in managers, managers
    for k in writers:
        assert not [w for w in k.writes if "/pods/" in w[1]], k.writes
    assert not summary.pruned


async def test_record_of_other_shard_with_my_bucket_is_not_mine(cluster, namespace):
    """b's PVC (shard 1) relabelled into shard 0's bucket and marked for deletion by policy,
    b then deleted: shard 0 sees it (its bucket) but neither applies to nor collects it;
    shard 1, to whom the record points, is the only one that may."""
    kube = cluster.kube
    a, b = await setup_two(cluster, namespace)
    pvc = f"{b}-workspace"
    await label_by_hand(kube, PVC, namespace, pvc, bucket_of(namespace, a))
    k0 = Recording(kube)
    summary = await shard_pass(k0, namespace, 0, 2)
    assert not summary.pruned and not k0.touched(pvc), k0.writes
    live = await kube.get(PVC, namespace, pvc)
    assert bucket(live) == bucket_of(namespace, a)
    summary = await shard_pass(Recording(kube), namespace, 1, 2)
    assert result_for(summary, b).error == ""
    assert bucket(await kube.get(PVC, namespace, pvc)) == bucket_of(namespace, b)


# --- garbage collection -----------------------------------------------------------------------


def _deletable_pvcs(template: dict) -> dict:
    def change(t):
        t["spec"]["pvcs"][0]["deletionPolicy"] = "Delete"

    return edited(template, change)


async def _orphans_of_both_shards(kube: Kube, namespace: str) -> tuple[list[str], list[str]]:
    """Two instances of each shard of 2 (PVCs deletionPolicy Delete), served, one PVC of each
    without its bucket label, then every instance deleted: (shard 0's names, shard 1's)."""
    await put(kube, _deletable_pvcs(seed_template(namespace)))
    mine = [name_in("a", namespace, 0, 2, skip=i) for i in range(2)]
    theirs = [name_in("b", namespace, 1, 2, skip=i) for i in range(2)]
    for name in mine + theirs:
        await put(kube, seed_instance(namespace, name))
    for i in range(2):
        await shard_pass(kube, namespace, i, 2)
    await label_by_hand(kube, PVC, namespace, f"{mine[0]}-workspace", None)
    await label_by_hand(kube, PVC, namespace, f"{theirs[0]}-workspace", None)
    for name in mine + theirs:
        await kube.delete(INSTANCE, namespace, name)
    await wait_for(lambda: _no_instances(kube, namespace), timeout=60, message="instances deleted")
    return mine, theirs


async def test_orphans_collected_by_their_shard_only_some_unlabelled(cluster, namespace):
    """Orphaned PVCs (deletionPolicy Delete, instances deleted), one of them without its bucket
    label: shard 0 collects exactly its own orphans, labelled or not; shard 1's stay until
    shard 1 runs."""
    kube = cluster.kube
    mine, theirs = await _orphans_of_both_shards(kube, namespace)
    k0 = Recording(kube)
    summary = await shard_pass(k0, namespace, 0, 2)
    assert sorted(c.ref.name for c in summary.pruned) == sorted(f"{n}-workspace" for n in mine)
    for name in theirs:
        assert await kube.get(PVC, namespace, f"{name}-workspace") is not None
        assert not k0.touched(f"{name}-workspace")
    summary = await shard_pass(kube, namespace, 1, 2)
    assert sorted(c.ref.name for c in summary.pruned) == sorted(f"{n}-workspace" for n in theirs)


async def _no_instances(kube: Kube, namespace: str) -> bool:
    return not (await kube.list(INSTANCE, namespace)).items


async def test_relabelled_object_of_dropped_item_is_collected(cluster, namespace):
    """A PVC (deletionPolicy Delete) relabelled into the other shard's bucket, then its item
    removed from the template: garbage collection must still delete it (no orphan left)."""
    kube = cluster.kube
    template = _deletable_pvcs(seed_template(namespace))
    await put(kube, template)
    a = name_in("a", namespace, 0, 2)
    await put(kube, seed_instance(namespace, a))
    await shard_pass(kube, namespace, 0, 2)
    pvc = f"{a}-workspace"
    await label_by_hand(kube, PVC, namespace, pvc, other_bucket(namespace, a, 2))

    def drop_pvc(t):
        t["spec"]["pvcs"] = []
        t["spec"]["pods"][0]["spec"]["volumes"] = []
        t["spec"]["pods"][0]["spec"]["containers"][0].pop("volumeMounts")

    await put(kube, edited(template, drop_pvc))
    for _ in range(2):
        for i in range(2):
            await shard_pass(kube, namespace, i, 2)
    live = await kube.get(PVC, namespace, pvc)  # terminating while the running pod mounts it
    assert live is None or live["metadata"].get("deletionTimestamp"), live["metadata"]


async def test_tampered_instance_label_not_collected_by_other_shard(cluster, namespace):
    """a's PVC (deletionPolicy Delete) gets b's instance label (and b's bucket) by hand: its
    owner record no longer agrees with it, so it is no one's (README, Ownership: a record that
    disagrees counts as no record; GC deletes only what carries one). b's shard must not
    delete a's data because the label names b. (Was a bug: garbage collection fell back to the
    label whenever the record did not agree, and b's shard deleted the PVC.)"""
    kube = cluster.kube
    await put(kube, _deletable_pvcs(seed_template(namespace)))
    for count in (2, 3):  # selected by bucket, and listed whole
        a = name_in(f"a{count}x", namespace, 0, count)
        b = name_in(f"b{count}x", namespace, 1, count)
        for name in (a, b):
            await put(kube, seed_instance(namespace, name))
        for i in range(count):
            await shard_pass(kube, namespace, i, count)
        pvc = f"{a}-workspace"
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{pvc}"
        await kube.call(
            "PATCH",
            path,
            body={"metadata": {"labels": {labels.INSTANCE: b, BUCKET: bucket_of(namespace, b)}}},
            content_type="application/merge-patch+json",
        )
        k1 = Recording(kube)
        summary = await shard_pass(k1, namespace, 1, count)
        assert pvc not in [c.ref.name for c in summary.pruned]
        assert not k1.touched(pvc), k1.writes
        assert await kube.get(PVC, namespace, pvc) is not None
        purge = seed_instance(namespace, b)
        purge["spec"]["purge"] = True  # b's data asked gone: a's PVC is not b's
        await put(kube, purge)
        summary = await shard_pass(k1, namespace, 1, count)
        assert not k1.touched(pvc), k1.writes
        assert await kube.get(PVC, namespace, pvc) is not None
        gone = await kube.get(PVC, namespace, f"{b}-workspace")  # deleted (or terminating)
        assert gone is None or gone["metadata"].get("deletionTimestamp")


async def test_retained_unlabelled_orphan_does_not_disable_selection_for_ever(cluster, namespace):
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, 2)
    await put(kube, seed_instance(namespace, a))
    await shard_pass(kube, namespace, 0, 2)
    await label_by_hand(kube, PVC, namespace, f"{a}-workspace", None)  # as an older release
    await kube.delete(INSTANCE, namespace, a)
    await wait_for(lambda: _no_instances(kube, namespace), timeout=60)
    for i in range(2):
        await shard_pass(kube, namespace, i, 2)
    assert await kube.get(PVC, namespace, f"{a}-workspace") is not None  # user data kept
    settings = Settings(namespaces=(namespace,), shard=Shard(0, 2), key_namespace=namespace)
    assert BUCKET in await owned_selector(kube, settings, [PVC, POD])  # a start relabels it
    kept = await kube.get(PVC, namespace, f"{a}-workspace")
    assert bucket(kept) == bucket_of(namespace, a), "so the next start selects at once"
    assert not kept["metadata"].get("deletionTimestamp")


# --- re-sharding, names, a broken instance ------------------------------------------------------


async def test_reshard_2_4_3_2_moves_nothing(cluster, namespace):
    """Instances (plain, dotted, 63+ characters) served by 2, then 4, then 3 (no selection),
    then 2 shards again, each configuration run whole between: every instance served by exactly
    one shard of each, each shard's writes only to its own instances' objects, no delete, no
    uid changed, every bucket label right."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    names = [f"u{i}" for i in range(8)] + ["alice.example.com", "x" * 70, "bob.smith-jones"]
    for name in names:
        await put(kube, seed_instance(namespace, name))
    uids: dict[tuple[str, str], str] = {}
    for count in (2, 4, 3, 2):
        served: list[str] = []
        for i in range(count):
            k = Recording(kube)
            summary = await shard_pass(k, namespace, i, count)
            mine = [r.instance.name for r in summary.instances]
            assert all(shard_of(namespace, n, count) == i for n in mine)
            for r in summary.instances:
                assert r.error == "", (count, i, r.instance.name, r.error)
            served += mine
            assert not summary.pruned
            assert not [w for w in k.writes if w[0] == "DELETE"], k.writes
            others = [n for n in names if n not in mine]
            for n in others:
                assert not [w for w in k.writes if f"/{INSTANCE.plural}/{n}/" in w[1] + "/"], (
                    n,
                    k.writes,
                )
        assert sorted(served) == sorted(names), count
        for res in (POD, PVC):
            for obj in (await kube.list(res, namespace)).items:
                meta = obj["metadata"]
                owner = meta["annotations"][OWNER].split("/")[1]
                assert meta["labels"][BUCKET] == bucket_of(namespace, owner)
                assert uids.setdefault((res.kind, meta["name"]), meta["uid"]) == meta["uid"]
    assert len(uids) == 2 * len(names)


async def test_broken_instance_does_not_stop_its_shard(cluster, namespace):
    """One instance of shard 0 names a missing template, another's template renders a pod the
    apiserver refuses: shard 0's healthy instance is still served, shard 1 unaffected."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))

    def bad(t):
        t["metadata"]["name"] = "bad-template"
        t["spec"]["pods"][0]["spec"]["containers"][0]["image"] = ""  # refused by the apiserver

    await put(kube, edited(seed_template(namespace), bad))
    missing = name_in("m", namespace, 0, 2)
    refused = name_in("r", namespace, 0, 2)
    good = name_in("g", namespace, 0, 2)
    other = name_in("o", namespace, 1, 2)
    await put(kube, seed_instance(namespace, missing, template="nope"))
    await put(kube, seed_instance(namespace, refused, template="bad-template"))
    for name in (good, other):
        await put(kube, seed_instance(namespace, name))
    summary = await shard_pass(kube, namespace, 0, 2)
    assert result_for(summary, missing).error
    assert result_for(summary, refused).error
    assert result_for(summary, good).error == ""
    assert await kube.get(POD, namespace, f"{good}-notebook") is not None
    summary = await shard_pass(kube, namespace, 1, 2)
    assert result_for(summary, other).error == ""


@pytest.mark.parametrize("spec", ["2/2", "0/0", "-1/2", "1/257", "1/2/3", "a/b", "1 / 2", ""])
def test_cli_bad_shard_is_a_clear_error(spec):
    """`reconcile --once --shard X`: exit 2, a message naming --shard and the fix, no
    traceback (checked before any connection is tried)."""
    done = subprocess.run(
        [sys.executable, "-m", "jupyternetes_ssa", "reconcile", "--once", "--shard", spec],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    assert "--shard" in out


class RelabelledInFlight(Recording):
    """Injects a race the real thing makes only rarely: right after the apiserver created the
    pod `target`, someone relabels it out of the shard's selection, and our apply's answer is
    handled only once the pod watch has delivered that (a slow response)."""

    def __init__(self, base: Kube, namespace: str, target: str, delete: bool = False):
        super().__init__(base)
        self.base, self.namespace, self.target, self.delete_it = base, namespace, target, delete
        self.controller: Controller | None = None
        self.fired = False

    async def apply(self, manifest, **kw):
        live = await super().apply(manifest, **kw)
        meta = manifest["metadata"]
        if self.fired or kw.get("dry_run") or manifest["kind"] != "Pod":
            return live
        if meta["name"] != self.target or kw.get("subresource"):
            return live
        self.fired = True
        if self.delete_it:  # gone at once (no grace), as a node's eviction may leave it
            path = f"/api/v1/namespaces/{self.namespace}/pods/{self.target}"
            moved = await self.base.call("DELETE", path, params={"gracePeriodSeconds": 0})
            rv = moved["metadata"]["resourceVersion"]  # its removal's version (no finalizer)
        else:
            moved = await label_by_hand(self.base, POD, self.namespace, self.target, "x")
            rv = moved["metadata"]["resourceVersion"]
        watch = next(i for i in self.controller.informers if i.res is POD)
        await wait_for(
            lambda: watch.delivered_past(self.namespace, rv), timeout=60, message="watch"
        )
        return live


@pytest.mark.parametrize("shard", [Shard(0, 2), Shard()], ids=["sharded", "unsharded"])
async def test_pod_deleted_while_its_create_is_answered_is_made_again(cluster, namespace, shard):
    """The same race with the pod deleted: the reconciler must make it again (was a bug: the
    create's answer put the deleted pod back in the cache, and the instance waited for a pod
    that did not exist until the next re-list)."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, 2)
    pod = f"{a}-notebook"
    racing = RelabelledInFlight(kube, namespace, pod, delete=True)
    settings = Settings(
        namespaces=(namespace,),
        key_namespace=namespace,
        shard=shard,
        health_port=0,
        status_interval_seconds=0.2,
    )
    stop = asyncio.Event()
    racing.controller = controller = Controller(racing, settings)
    task = asyncio.create_task(controller.run(stop))
    try:
        await wait_for(lambda: controller.synced() or task.done(), timeout=60)
        await put(kube, seed_instance(namespace, a))
        await wait_for(lambda: racing.fired or task.done(), timeout=60, message="race")
        await wait_for(lambda: kube.get(POD, namespace, pod), timeout=30, message="pod again")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def test_pod_relabelled_while_its_create_is_answered(cluster, namespace):
    """A pod relabelled out of the shard's selection just after the shard created it: the
    watch says it left, then the shard handles its create's answer. The owner must still see
    that the pod lacks its label and put it back (not keep the created version in its cache
    for ever, blind to the pod's later changes)."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, 2)
    pod = f"{a}-notebook"
    racing = RelabelledInFlight(kube, namespace, pod)
    settings = Settings(
        namespaces=(namespace,),
        key_namespace=namespace,
        shard=Shard(0, 2),
        health_port=0,
        status_interval_seconds=0.2,
    )
    stop = asyncio.Event()
    racing.controller = controller = Controller(racing, settings)
    task = asyncio.create_task(controller.run(stop))
    try:
        await wait_for(lambda: controller.synced() or task.done(), timeout=60)
        await put(kube, seed_instance(namespace, a))
        await wait_for(lambda: racing.fired or task.done(), timeout=60, message="race")

        async def restored():
            return bucket(await kube.get(POD, namespace, pod)) == bucket_of(namespace, a)

        await wait_for(restored, timeout=30, message=f"{pod}'s bucket label put back")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def test_purge_of_instance_with_relabelled_pvc_is_not_reported_done(cluster, namespace):
    """The user asks for their data to be deleted (spec.purge); their PVC's bucket label was
    moved by hand. The instance must not say Purged while the PVC is still there."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, 2)
    await put(kube, seed_instance(namespace, a))
    await shard_pass(kube, namespace, 0, 2)
    pvc = f"{a}-workspace"
    await label_by_hand(kube, PVC, namespace, pvc, other_bucket(namespace, a, 2))
    purge = seed_instance(namespace, a)
    purge["spec"]["purge"] = True
    await put(kube, purge)
    for _ in range(2):
        for i in range(2):
            await shard_pass(kube, namespace, i, 2)
    status = (await kube.get(INSTANCE, namespace, a)).get("status", {})
    live = await kube.get(PVC, namespace, pvc)
    still_there = live is not None and not live["metadata"].get("deletionTimestamp")
    assert not (status.get("phase") == "Purged" and still_there), (status.get("phase"), pvc)


async def test_continuous_shard_collects_only_its_orphans_some_unlabelled(cluster, namespace):
    """Continuous mode: orphaned PVCs (deletionPolicy Delete) of both shards, one of each
    without its bucket label (so the shard lists all of ours): shard 0 collects exactly its
    own, and sends nothing to shard 1's."""
    kube = cluster.kube
    mine, theirs = await _orphans_of_both_shards(kube, namespace)
    k0 = Recording(kube)
    run = await _controller(k0, namespace, 0, 2)
    try:

        async def collected():
            for name in mine:
                live = await kube.get(PVC, namespace, f"{name}-workspace")
                if live is not None and not live["metadata"].get("deletionTimestamp"):
                    return False
            return True

        await wait_for(collected, timeout=60, message="shard 0's orphans collected")
    finally:
        await _stop(run)
    for name in theirs:
        live = await kube.get(PVC, namespace, f"{name}-workspace")
        assert live is not None and not live["metadata"].get("deletionTimestamp")
        assert not k0.touched(f"{name}-workspace"), k0.writes


async def test_next_start_finds_its_relabelled_pvc(cluster, namespace):
    """The user's PVC (kept, the default) relabelled into the other shard's bucket, the server
    stopped (instance deleted) and started again (a new incarnation): the owner shard finds the
    same PVC, user data and all, and re-labels it; the other shard never touches it."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    a = name_in("a", namespace, 0, 2)
    await put(kube, seed_instance(namespace, a))
    await shard_pass(kube, namespace, 0, 2)
    pvc = f"{a}-workspace"
    first = await label_by_hand(kube, PVC, namespace, pvc, other_bucket(namespace, a, 2))
    await kube.delete(INSTANCE, namespace, a)
    await wait_for(lambda: _no_instances(kube, namespace), timeout=60)
    k1 = Recording(kube)
    await shard_pass(k1, namespace, 1, 2)
    await put(kube, seed_instance(namespace, a))
    await shard_pass(k1, namespace, 1, 2)
    assert not k1.touched(pvc), k1.writes
    await wait_for(
        lambda: _pod_gone(kube, namespace, f"{a}-notebook"), timeout=60, message="old pod gone"
    )
    summary = await shard_pass(kube, namespace, 0, 2)
    assert result_for(summary, a).error == "", result_for(summary, a).error
    live = await kube.get(PVC, namespace, pvc)
    assert live["metadata"]["uid"] == first["metadata"]["uid"]
    assert bucket(live) == bucket_of(namespace, a)
    new_uid = (await kube.get(INSTANCE, namespace, a))["metadata"]["uid"]
    assert live["metadata"]["annotations"][OWNER] == f"{namespace}/{a}/{new_uid}"


async def _pod_gone(kube: Kube, namespace: str, name: str) -> bool:
    return await kube.get(POD, namespace, name) is None


async def test_cli_once_shard_serves_its_own_and_reports_broken_without_traceback(
    cluster, namespace
):
    """`reconcile --once --shard I/2` as a CronJob runs it: each run names only its own
    instances; a broken one (missing template) makes the run exit 1 with its reason, no
    traceback, and its shard's other instance is served."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    good = name_in("g", namespace, 0, 2)
    broken = name_in("k", namespace, 0, 2)
    other = name_in("o", namespace, 1, 2)
    await put(kube, seed_instance(namespace, good))
    await put(kube, seed_instance(namespace, broken, template="missing"))
    await put(kube, seed_instance(namespace, other))

    def run(spec: str) -> subprocess.CompletedProcess:
        args = ["reconcile", "--once", "--shard", spec, "-n", namespace]
        args += ["--key-namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)]
        return subprocess.run(
            [sys.executable, "-m", "jupyternetes_ssa", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = await asyncio.to_thread(run, "0/2")
    out = first.stdout + first.stderr
    assert first.returncode == 1, out
    assert "Traceback" not in out
    assert f"{namespace}/{broken}:" in out and "TemplateNotFound" in out, out
    assert f"{namespace}/{good}:" in out and f"{namespace}/{other}:" not in out, out
    assert await kube.get(POD, namespace, f"{good}-notebook") is not None
    assert await kube.get(POD, namespace, f"{other}-notebook") is None
    second = await asyncio.to_thread(run, "1/2")
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert f"{namespace}/{other}:" in out and f"{namespace}/{good}:" not in out, out
