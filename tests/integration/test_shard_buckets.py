"""Shard buckets against a real apiserver: a shard whose N divides 256 has the apiserver send it
only its own pods and PVCs (by their shard-bucket label); objects made before the label existed
make it list everything until they are re-labelled; a label changed or removed by hand is put
back by the object's own shard, and the other shard never writes to it."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from reconcile_helpers import once, owned, put, seed_instance, seed_template
from test_shard import Writes, all_running, instance_of_write, shards, users

from jupyternetes_ssa import labels
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.names import safe_label_value, safe_name
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import BUCKETS, Shard, bucket_of, shard_of

pytestmark = pytest.mark.integration

STRIP_BUCKET = [
    {"op": "remove", "path": "/metadata/labels/jupyternetes-ssa.kadense.io~1shard-bucket"}
]


class Lists(Kube):
    """Records each page of pods and PVCs listed: (selector, items). A spy on real requests,
    not a mock: every one still reaches the apiserver and its answer is returned unchanged."""

    def __init__(self, api):
        super().__init__(api)
        self.pages: list[tuple[str, int]] = []

    async def request(self, method, res, namespace, url, **kwargs):
        body = await super().request(method, res, namespace, url, **kwargs)
        params = kwargs.get("params") or {}
        if method == "GET" and res in (POD, PVC) and "limit" in params and params["limit"] > 1:
            self.pages.append((params.get("labelSelector", ""), len(body.get("items") or [])))
        return body


async def _converged(kube: Kube, namespace: str, names: list[str]) -> None:
    await put(kube, seed_template(namespace))
    for n in names:
        await put(kube, seed_instance(namespace, n))
    assert (await once(kube, namespace)).ok


async def _objects(kube: Kube, namespace: str) -> list[dict]:
    return [
        *(await kube.list(POD, namespace, label_selector=labels.MANAGED_SELECTOR)).items,
        *(await kube.list(PVC, namespace, label_selector=labels.MANAGED_SELECTOR)).items,
    ]


def _bucket(obj: dict) -> str | None:
    return (obj["metadata"].get("labels") or {}).get(labels.SHARD_BUCKET)


async def _strip_buckets(kube: Kube, namespace: str) -> None:
    """What a release before shard buckets left behind: our objects without the label."""
    for obj in await _objects(kube, namespace):
        res = POD if obj["kind"] == "Pod" else PVC
        await kube.request(
            "PATCH",
            res,
            namespace,
            res.url(obj["metadata"]["name"]),
            content=json.dumps(STRIP_BUCKET).encode(),
            headers={"Content-Type": "application/json-patch+json"},
        )


def test_a_bucket_decides_the_shard_for_every_count_dividing_the_buckets():
    names = [f"user-{i}" for i in range(300)] + ["alice@example.com", "x" * 253]
    for count in (2, 4, 8, 16, 256):
        for name in names:
            assert int(bucket_of("ns", name)) % count == shard_of("ns", name, count)
    assert Shard(0, 3).selector is None, "3 does not divide 256: the reconciler filters"
    assert Shard(0, 1).selector is None, "unsharded: no bucket clause"
    selected = Shard(1, 4).selector
    assert selected is not None and selected.startswith(f"{labels.SHARD_BUCKET} in (1,5,9,")
    assert len(selected.split(",")) == BUCKETS // 4


@contextlib.asynccontextmanager
async def shard(kube: Kube, namespace: str, index: int, **settings):
    """A continuous shard `index` of 2, synced on entry, stopped on exit."""
    controller = Controller(
        kube,
        Settings(
            namespaces=(namespace,),
            key_namespace=namespace,
            health_port=0,
            shard=Shard(index, 2),
            **settings,
        ),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        await wait_for(lambda: controller.synced() or task.done(), timeout=60, message="synced")
        assert not task.done(), "the shard ended early"
        yield controller
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


def selected(index: int) -> str:
    return f"{labels.MANAGED_SELECTOR},{Shard(index, 2).selector}"


async def test_a_continuous_shard_is_sent_only_its_own_objects(cluster, kube: Kube, namespace: str):
    names = users(namespace, 2, each=3)
    await _converged(kube, namespace, names)
    assert all(
        _bucket(o) == bucket_of(namespace, instance_of(o)) for o in await _objects(kube, namespace)
    )

    for index in range(2):
        spy = Lists(cluster.api)
        async with shard(spy, namespace, index) as controller:
            mine = {(namespace, n) for n in names if shard_of(namespace, n, 2) == index}
            assert set(controller.observed.instances) == mine
        assert {s for s, _ in spy.pages} == {selected(index)}
        assert sum(n for _, n in spy.pages) == 2 * len(mine), "its pods and PVCs only"


async def test_once_mode_lists_every_object_of_ours(cluster, kube: Kube, namespace: str):
    """A pass sees everything, so no bucket label (edited by hand or absent) hides anything."""
    names = users(namespace, 2)
    await _converged(kube, namespace, names)
    spy = Lists(cluster.api)
    summary = await once(spy, namespace, shard=Shard(0, 2))
    assert summary.ok and {s for s, _ in spy.pages} == {labels.MANAGED_SELECTOR}
    assert all(o.action == "unchanged" for r in summary.instances for o in r.outcomes)


def instance_of(obj: dict) -> str:
    return (obj["metadata"].get("labels") or {})[labels.INSTANCE]


async def test_objects_from_before_buckets_are_relabelled_before_a_shard_selects(
    cluster, kube: Kube, namespace: str
):
    names = users(namespace, 2)
    await _converged(kube, namespace, names)
    before = {o["metadata"]["uid"] for o in await _objects(kube, namespace)}
    await _strip_buckets(kube, namespace)
    assert not any(_bucket(o) for o in await _objects(kube, namespace))

    spy = Lists(cluster.api)
    async with shard(spy, namespace, 0) as controller:
        mine = {n for n in names if shard_of(namespace, n, 2) == 0}
        cached = {k[1] for store in controller.observed.owned.values() for k in store}
        assert cached == {f"{n}-{s}" for n in mine for s in ("notebook", "workspace")}
    assert selected(0) in {s for s, _ in spy.pages}
    after = await _objects(kube, namespace)
    assert {o["metadata"]["uid"] for o in after} == before, "nothing re-created or lost"
    for obj in after:  # shard 0's relabelled; shard 1's left for shard 1
        owner = instance_of(obj)
        want = bucket_of(namespace, owner) if owner in mine else None
        assert _bucket(obj) == want, obj["metadata"]["name"]


async def _moved_out(kube: Kube, namespace: str) -> tuple[list[str], str]:
    """Shard 0's instances (PVCs deletionPolicy Delete); the first one's PVC moved into shard
    1's bucket by hand. (names, that PVC)"""
    template = seed_template(namespace)
    for claim in template["spec"]["pvcs"]:
        claim["deletionPolicy"] = "Delete"
    await put(kube, template)
    names = [n for n in users(namespace, 2, each=2) if shard_of(namespace, n, 2) == 0]
    await _converged(kube, namespace, names)
    claim = f"{names[0]}-workspace"
    elsewhere = next(str(b) for b in range(BUCKETS) if b % 2 == 1)
    await kube.request(
        "PATCH",
        PVC,
        namespace,
        PVC.url(claim),
        content=json.dumps({"metadata": {"labels": {labels.SHARD_BUCKET: elsewhere}}}).encode(),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    return names, claim


async def test_the_resync_sweep_brings_back_what_was_moved_out_of_a_shards_buckets(
    cluster, kube: Kube, namespace: str
):
    names, claim = await _moved_out(kube, namespace)
    async with shard(Kube(cluster.api), namespace, 0, resync_seconds=1) as controller:

        async def back() -> bool:
            return _bucket(await kube.get(PVC, namespace, claim)) == bucket_of(namespace, names[0])

        await wait_for(back, timeout=60, message="the resync sweep relabelled it")
        await wait_for(
            lambda: (namespace, claim) in controller.observed.pvcs,
            timeout=30,
            message="and the shard's cache has it",
        )


async def test_a_purge_finds_a_pvc_moved_out_of_its_shards_buckets(
    cluster, kube: Kube, namespace: str
):
    """No resync meanwhile: the purge itself looks outside the shard's selection."""
    names, claim = await _moved_out(kube, namespace)
    async with shard(Kube(cluster.api), namespace, 0, resync_seconds=3600):
        purge = seed_instance(namespace, names[0])
        purge["spec"]["purge"] = True
        await put(kube, purge)

        async def purged() -> str:
            return ((await kube.get(INSTANCE, namespace, names[0])).get("status") or {}).get(
                "phase", ""
            )

        await wait_for(lambda: _is(purged, "Purged"), timeout=60, message="Purged")
        live = await kube.get(PVC, namespace, claim)
        assert live is None or live["metadata"].get("deletionTimestamp"), "and it was deleted"


async def _is(read, value) -> bool:
    return await read() == value


async def test_a_bucket_label_changed_or_removed_by_hand_is_put_back_by_its_own_shard(
    cluster, kube: Kube, namespace: str
):
    names = users(namespace, 2)
    await put(kube, seed_template(namespace))
    for n in names:
        await put(kube, seed_instance(namespace, n))
    writes = Writes()
    victim = names[0]
    pod_name = safe_name(f"{victim}-notebook")
    right = bucket_of(namespace, victim)
    wrong = next(str(b) for b in range(BUCKETS) if b % 2 != int(right) % 2)

    async with shards(cluster, namespace, 2, writes) as (zero, one):
        await wait_for(lambda: all_running(kube, namespace, names), timeout=120, message="running")
        pod = await kube.get(POD, namespace, pod_name)
        for change in (
            {"metadata": {"labels": {labels.SHARD_BUCKET: wrong}}},  # another shard's bucket
            {"metadata": {"labels": {labels.SHARD_BUCKET: None}}},  # none at all
        ):
            await kube.request(
                "PATCH",
                POD,
                namespace,
                POD.url(pod_name),
                content=json.dumps(change).encode(),
                headers={"Content-Type": "application/merge-patch+json"},
            )

            async def restored() -> bool:
                live = await kube.get(POD, namespace, pod_name)
                return _bucket(live) == right

            await wait_for(restored, timeout=60, message="the bucket label put back")
            live = await kube.get(POD, namespace, pod_name)
            assert live["metadata"]["uid"] == pod["metadata"]["uid"], "the pod was not replaced"
        home = zero if shard_of(namespace, victim, 2) == 0 else one
        other = f"2-shards-{1 - home.s.shard.index}"
        assert victim not in {instance_of_write(w, names) for w in writes.by(other)}
        pods, _ = await owned(kube, namespace, safe_label_value(victim))
        assert len(pods) == 1, "no second pod"


async def test_a_sweep_never_relabels_an_object_that_only_wears_our_labels(
    cluster, kube: Kube, namespace: str
):
    """Hand-made pods with our managed-by and instance labels (one with a forged owner record
    naming the instance), none of our field manager: the start's sweep writes to none."""
    names = [n for n in users(namespace, 2) if shard_of(namespace, n, 2) == 0]
    await _converged(kube, namespace, names)
    instance = await kube.get(INSTANCE, namespace, names[0])
    record = f"{namespace}/{names[0]}/{instance['metadata']['uid']}"
    lures = {"lure-plain": {}, "lure-recorded": {"jupyternetes-ssa.kadense.io/owner": record}}
    for name, notes in lures.items():
        await kube.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "annotations": notes,
                    "labels": {
                        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                        labels.INSTANCE: names[0],
                    },
                },
                "spec": {
                    "schedulerName": "nobody",  # never scheduled: only we could change it
                    "containers": [{"name": "c", "image": "busybox:1.36"}],
                },
            },
            field_manager="kubectl-create",  # made by hand, whatever it wears
        )
    before = {n: await kube.get(POD, namespace, n) for n in lures}

    async with shard(Kube(cluster.api), namespace, 0):
        pass

    for name, pod in before.items():
        live = await kube.get(POD, namespace, name)
        assert live["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"], (
            name,
            [m["manager"] for m in live["metadata"]["managedFields"]],
        )
        assert _bucket(live) is None
