"""Shard buckets against a real apiserver: a shard whose N divides 256 has the apiserver send it
only its own pods and PVCs (by their shard-bucket label); objects made before the label existed
make it list everything until they are re-labelled; a label changed or removed by hand is put
back by the object's own shard, and the other shard never writes to it."""

from __future__ import annotations

import json

import pytest
from reconcile_helpers import once, owned, put, seed_instance, seed_template
from test_shard import Writes, all_running, instance_of_write, shards, users

from jupyternetes_ssa import labels
from jupyternetes_ssa.kube import POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.names import safe_label_value, safe_name
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


@pytest.fixture
async def kube(cluster) -> Kube:
    return Kube(cluster.api)


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


async def test_a_shard_is_sent_only_its_own_objects(cluster, kube: Kube, namespace: str):
    names = users(namespace, 2, each=3)
    await _converged(kube, namespace, names)
    assert all(
        _bucket(o) == bucket_of(namespace, instance_of(o)) for o in await _objects(kube, namespace)
    )

    for index in range(2):
        spy = Lists(cluster.api)
        summary = await once(spy, namespace, shard=Shard(index, 2))
        mine = sum(shard_of(namespace, n, 2) == index for n in names)
        assert summary.ok and len(summary.instances) == mine
        assert {s for s, _ in spy.pages} == {
            f"{labels.MANAGED_SELECTOR},{Shard(index, 2).selector}"
        }
        assert sum(n for _, n in spy.pages) == 2 * mine, "its pods and PVCs, not the other's"
        assert all(o.action == "unchanged" for r in summary.instances for o in r.outcomes)


def instance_of(obj: dict) -> str:
    return (obj["metadata"].get("labels") or {})[labels.INSTANCE]


async def test_objects_from_before_buckets_are_listed_whole_then_relabelled(
    cluster, kube: Kube, namespace: str
):
    names = users(namespace, 2)
    await _converged(kube, namespace, names)
    before = {o["metadata"]["uid"] for o in await _objects(kube, namespace)}
    await _strip_buckets(kube, namespace)
    assert not any(_bucket(o) for o in await _objects(kube, namespace))

    for index in range(2):  # each shard: lists everything, serves its own, re-labels them
        spy = Lists(cluster.api)
        summary = await once(spy, namespace, shard=Shard(index, 2))
        assert summary.ok and not summary.pruned
        assert {s for s, _ in spy.pages} == {labels.MANAGED_SELECTOR}
        assert not [o for r in summary.instances for o in r.outcomes if o.action == "created"]
    after = await _objects(kube, namespace)
    assert {o["metadata"]["uid"] for o in after} == before, "nothing re-created or lost"
    assert all(_bucket(o) == bucket_of(namespace, instance_of(o)) for o in after)

    spy = Lists(cluster.api)
    assert (await once(spy, namespace, shard=Shard(0, 2))).ok
    assert {s for s, _ in spy.pages} == {f"{labels.MANAGED_SELECTOR},{Shard(0, 2).selector}"}


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
