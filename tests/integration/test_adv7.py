"""Hostile review (adv7): a shard's relabel sweep and the sealed token's create-only start.

Against the real apiserver. The relabel sweep must write only to objects the shard owns (our
label, our field manager, an owner record that agrees with the object); a token Secret that is
not ours (made by hand, whatever labels and owner record it carries) must never get the token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

from jupyternetes_ssa import labels
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.keys import ensure, read_public_key
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, SECRET, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.observe import observe, owned_resources, owned_selector
from jupyternetes_ssa.ownership import OWNER
from jupyternetes_ssa.reconcile import reconcile_instance
from jupyternetes_ssa.relabel import RELABEL_MANAGER, relabel, strays, sweep
from jupyternetes_ssa.sealing import seal
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import Shard, bucket_of, shard_of
from tests.integration.reconcile_helpers import (
    condition,
    once,
    owned,
    put,
    result_for,
    seed_instance,
    seed_template,
    status_of,
)
from tests.integration.test_adv6_shards import label_by_hand

ZERO = Shard(0, 2)
ONE = Shard(1, 2)


def name_on(shard: Shard, namespace: str, stem: str) -> str:
    """An instance name of `namespace` that hashes to `shard`."""
    return next(
        f"{stem}{i}"
        for i in range(1000)
        if shard_of(namespace, f"{stem}{i}", shard.count) == shard.index
    )


def settings(namespace: str, shard: Shard) -> Settings:
    return Settings(namespaces=(namespace,), shard=shard, key_namespace=namespace)


def pvc(namespace: str, name: str, lbl: dict, annotations: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": lbl,
            "annotations": annotations or {},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
    }


def ours(instance: str) -> dict:
    return {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.INSTANCE: instance}


async def bucket_label(kube: Kube, namespace: str, name: str) -> str | None:
    live = await kube.get(PVC, namespace, name)
    return (live["metadata"].get("labels") or {}).get(labels.SHARD_BUCKET)


def relabel_managed(obj: dict) -> bool:
    return any(m.get("manager") == RELABEL_MANAGER for m in obj["metadata"]["managedFields"])


# --- the relabel sweep ---------------------------------------------------------------------


async def test_sweep_leaves_a_hand_made_object_with_our_labels(cluster, namespace):
    """A PVC made by hand with our managed-by and instance labels (no owner record, not our
    field manager) is no object of ours: the sweep must not write to it."""
    kube = cluster.kube
    mine = name_on(ZERO, namespace, "hand")
    await put(kube, pvc(namespace, "hand-made", ours(mine)))
    moved = await sweep(kube, settings(namespace, ZERO), [PVC])
    live = await kube.get(PVC, namespace, "hand-made")
    assert moved == 0
    assert labels.SHARD_BUCKET not in live["metadata"]["labels"]
    assert not relabel_managed(live)


async def test_sweep_leaves_a_disowned_object(cluster, namespace):
    """An owner record that disagrees with the instance label makes an object no one's
    (README: no shard collects or purges it): no shard relabels it either."""
    kube = cluster.kube
    mine = name_on(ZERO, namespace, "dis")
    record = {OWNER: f"{namespace}/someone-else/0000"}
    await put(kube, pvc(namespace, "disowned", ours(mine), record))
    assert await sweep(kube, settings(namespace, ZERO), [PVC]) == 0
    assert await bucket_label(kube, namespace, "disowned") is None


async def test_sweep_leaves_a_forged_owner_record(cluster, namespace):
    """A record that names this shard's instance and agrees with the labels, but on an object
    another manager made (not our field manager), is a forgery: not relabelled."""
    kube = cluster.kube
    mine = name_on(ZERO, namespace, "forged")
    record = {OWNER: f"{namespace}/{mine}/1234"}
    await put(kube, pvc(namespace, "forged", ours(mine), record))
    assert await sweep(kube, settings(namespace, ZERO), [PVC]) == 0
    assert await bucket_label(kube, namespace, "forged") is None


async def _served_pvc(kube: Kube, namespace: str, name: str) -> dict:
    """A real instance's PVC, made by a once pass, with its bucket label removed by hand."""
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, name))
    summary = await once(kube, namespace)
    assert result_for(summary, name).error == ""
    live = (await kube.list(PVC, namespace, label_selector=f"{labels.INSTANCE}={name}")).items
    assert len(live) == 1
    pvc_name = live[0]["metadata"]["name"]
    assert live[0]["metadata"]["labels"][labels.SHARD_BUCKET] == bucket_of(namespace, name)
    await kube.request(
        "PATCH",
        PVC,
        namespace,
        PVC.url(pvc_name),
        content=b'{"metadata":{"labels":{"jupyternetes-ssa.kadense.io/shard-bucket":null}}}',
        headers={"Content-Type": "application/merge-patch+json"},
        params={"fieldManager": "a-human"},
    )
    return await kube.get(PVC, namespace, pvc_name)


async def test_sweep_relabels_only_its_own_shards_object(cluster, namespace):
    """Another shard's stray is never written; its own shard gives it the label back."""
    kube = cluster.kube
    name = name_on(ONE, namespace, "srv")
    stray = await _served_pvc(kube, namespace, name)
    pvc_name = stray["metadata"]["name"]
    assert await sweep(kube, settings(namespace, ZERO), [PVC]) == 0
    assert await bucket_label(kube, namespace, pvc_name) is None
    assert await sweep(kube, settings(namespace, ONE), [PVC]) == 1
    assert await bucket_label(kube, namespace, pvc_name) == bucket_of(namespace, name)
    # and again: nothing left to do, no ping-pong within the shard
    assert await sweep(kube, settings(namespace, ONE), [PVC]) == 0


async def test_relabel_of_a_changed_or_deleted_object_is_left_to_the_next_sweep(cluster, namespace):
    """Between the sweep's list and its patch the object changes (a human sets the label to
    another bucket) or is deleted: the patch is refused (409/404), nothing raised, the
    human's label kept."""
    kube = cluster.kube
    name = name_on(ONE, namespace, "race")
    stray = await _served_pvc(kube, namespace, name)
    pvc_name = stray["metadata"]["name"]
    found = await strays(kube, settings(namespace, ONE), [PVC])
    assert [o["metadata"]["name"] for o in found] == [pvc_name]
    other = str((int(bucket_of(namespace, name)) + 1) % 256)
    await label_by_hand(kube, PVC, namespace, pvc_name, other)
    assert await relabel(kube, found) == 0
    assert await bucket_label(kube, namespace, pvc_name) == other
    # a stale view of an object since deleted: 404, nothing raised
    gone = dict(found[0], metadata=dict(found[0]["metadata"], name="no-such-pvc"))
    assert await relabel(kube, [gone]) == 0


async def test_relabel_of_an_object_replaced_by_a_hand_made_one(cluster, namespace):
    """Between the list and the patch, our stray is deleted and a PVC of the same name made by
    hand with our labels: the resourceVersion precondition refuses the patch (409), the
    hand-made PVC is not written."""
    kube = cluster.kube
    name = name_on(ONE, namespace, "swap")
    stray = await _served_pvc(kube, namespace, name)
    pvc_name = stray["metadata"]["name"]
    found = await strays(kube, settings(namespace, ONE), [PVC])
    assert [o["metadata"]["name"] for o in found] == [pvc_name]
    for pod in (await owned(kube, namespace, name))[0]:  # the PVC is protected while used
        await kube.delete(POD, namespace, pod["metadata"]["name"], grace_seconds=0)
    await kube.delete(PVC, namespace, pvc_name, grace_seconds=0)
    await wait_for(
        lambda: _absent(kube, namespace, pvc_name), timeout=60, message=f"{pvc_name} gone"
    )
    made = await put(
        kube, pvc(namespace, pvc_name, ours(name), dict(stray["metadata"]["annotations"]))
    )
    assert await relabel(kube, found) == 0
    live = await kube.get(PVC, namespace, pvc_name)
    assert live["metadata"]["uid"] == made["metadata"]["uid"]
    assert labels.SHARD_BUCKET not in live["metadata"]["labels"]
    assert not relabel_managed(live)


async def _absent(kube: Kube, namespace: str, name: str) -> bool:
    return await kube.get(PVC, namespace, name) is None


# --- the sealed token's start ----------------------------------------------------------------


async def _sealed(kube: Kube, namespace: str, name: str, token: str) -> dict:
    await ensure(kube, namespace)
    public = await read_public_key(kube, namespace)
    instance = seed_instance(namespace, name)
    instance["spec"]["sealedApiToken"] = seal(token, public, namespace, name)
    await put(kube, seed_template(namespace))
    return await put(kube, instance)


def hand_secret(namespace: str, name: str, lbl: dict, annotations: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{name}-hub-token",
            "namespace": namespace,
            "labels": lbl,
            "annotations": annotations,
        },
        "type": "Opaque",
        "data": {"token": base64.b64encode(b"not-yours").decode()},
    }


async def _assert_refused_untouched(kube: Kube, namespace: str, name: str, before: dict) -> None:
    summary = await once(kube, namespace)
    after = await kube.get(SECRET, namespace, f"{name}-hub-token")
    assert after["data"] == before["data"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    degraded = condition(await status_of(kube, namespace, name), "Degraded")
    assert degraded.get("reason") == "TokenSecretConflict", (degraded, summary)


async def test_hand_made_secret_with_a_forged_earlier_incarnation_record(cluster, namespace):
    """A Secret made by hand with our labels and an owner record naming an earlier (gone)
    incarnation of the instance: not the reconciler's Secret, so never taken over."""
    kube = cluster.kube
    lbl = ours("alice")
    before = await put(
        kube, hand_secret(namespace, "alice", lbl, {OWNER: f"{namespace}/alice/gone-uid"})
    )
    await _sealed(kube, namespace, "alice", "secret-token")
    await _assert_refused_untouched(kube, namespace, "alice", before)


async def test_hand_made_secret_with_a_forged_current_record(cluster, namespace):
    """The same with a record naming the live instance's own uid (readable by whoever reads
    instances): still not ours."""
    kube = cluster.kube
    instance = await _sealed(kube, namespace, "bob", "secret-token")
    uid = instance["metadata"]["uid"]
    # the instance exists but no pass ran: the Secret is made first, by hand
    before = await put(
        kube, hand_secret(namespace, "bob", ours("bob"), {OWNER: f"{namespace}/bob/{uid}"})
    )
    await _assert_refused_untouched(kube, namespace, "bob", before)


async def test_secret_with_only_our_managed_by_label(cluster, namespace):
    kube = cluster.kube
    lbl = {labels.MANAGED_BY: labels.MANAGED_BY_VALUE}
    before = await put(kube, hand_secret(namespace, "carol", lbl, {}))
    await _sealed(kube, namespace, "carol", "secret-token")
    await _assert_refused_untouched(kube, namespace, "carol", before)


async def test_last_incarnations_secret_is_taken_over(cluster, namespace):
    """Positive control: the genuine Secret of the instance's last incarnation is taken over
    and gets the new token and the new record."""
    kube = cluster.kube
    first = await _sealed(kube, namespace, "dave", "first-token")
    summary = await once(kube, namespace)
    assert result_for(summary, "dave").error == ""
    await kube.delete(INSTANCE, namespace, "dave")
    second = await _sealed(kube, namespace, "dave", "second-token")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    summary = await once(kube, namespace)
    assert result_for(summary, "dave").error == ""
    secret = await kube.get(SECRET, namespace, "dave-hub-token")
    assert base64.b64decode(secret["data"]["token"]) == b"second-token"
    assert secret["metadata"]["annotations"][OWNER].endswith(second["metadata"]["uid"])


async def test_secret_replaced_by_hand_while_the_server_runs(cluster, namespace):
    """A running server (its pod exists, so its Secret is read, not created) whose token Secret
    is deleted and re-made by hand with our labels and its owner record: refused, untouched;
    a second pass of the untampered server before that converges with no conflict."""
    kube = cluster.kube
    instance = await _sealed(kube, namespace, "erin", "erin-token")
    assert (await once(kube, namespace)).instances[0].error == ""
    assert (await once(kube, namespace)).instances[0].error == ""  # its own Secret: no conflict
    secret = await kube.get(SECRET, namespace, "erin-hub-token")
    await kube.delete(SECRET, namespace, "erin-hub-token")
    record = secret["metadata"]["annotations"][OWNER]
    assert record.endswith(instance["metadata"]["uid"])
    before = await put(kube, hand_secret(namespace, "erin", ours("erin"), {OWNER: record}))
    await _assert_refused_untouched(kube, namespace, "erin", before)


# --- a purge and a hidden stray ------------------------------------------------------------


async def _none_left(kube: Kube, namespace: str, name: str) -> bool:
    return not (await owned(kube, namespace, name))[0]


async def test_purge_is_not_reported_done_while_a_hidden_stray_remains(cluster, namespace):
    """A continuous shard purging an instance finds a PVC of it outside its buckets; between
    its list and its relabel patch the PVC changes (its status, a human's annotation): the
    patch is refused (409). The PVC still exists, hidden: the purge must not say Purged.

    Fault injection: the stray list is the real list, and the change in between is a real
    patch; only their order is forced (a watch-driven shard cannot be paused there on demand).
    """
    kube = cluster.kube
    name = name_on(ONE, namespace, "purge")
    stray = await _served_pvc(kube, namespace, name)
    pvc_name = stray["metadata"]["name"]
    purged = seed_instance(namespace, name)
    purged["spec"]["purge"] = True
    await put(kube, purged)
    for pod in (await owned(kube, namespace, name))[0]:  # only the hidden PVC is left
        await kube.delete(POD, namespace, pod["metadata"]["name"], grace_seconds=0)
    await wait_for(
        lambda: _none_left(kube, namespace, name), timeout=60, message=f"pods of {name} gone"
    )
    shard = settings(namespace, ONE)
    resources = await owned_resources(kube, shard)
    observed = await observe(kube, shard, resources)
    observed.forget(stray)  # the shard's selection does not show it

    async def strays_then_changed(value: str) -> list[dict]:
        found = await strays(kube, shard, resources, value)
        await kube.request(
            "PATCH",
            PVC,
            namespace,
            PVC.url(pvc_name),
            content=json.dumps({"metadata": {"annotations": {"touched": "yes"}}}).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
            params={"fieldManager": "a-human"},
        )
        return found

    observed.strays_of = strays_then_changed
    instance = observed.instances[(namespace, name)]
    await reconcile_instance(kube, observed, instance, shard)
    assert await kube.get(PVC, namespace, pvc_name) is not None
    status = await status_of(kube, namespace, name)
    assert status.get("phase") != "Purged", status


# --- the start sweep of a replica that does not lead yet -------------------------------------


async def test_start_sweep_before_leadership_hides_nothing(cluster, namespace):
    """With --leader-elect a shard chooses its selection (and sweeps) before it has its Lease,
    so every relabel is refused by its own fence. Then the objects still without a bucket
    label must not be hidden: the shard lists all of ours this run (README: "never wrong,
    only slower"), rather than selecting buckets that miss them.

    The fence is the real one (Kube.fenced) in the state of a replica not yet leading."""
    kube = cluster.kube
    name = name_on(ONE, namespace, "lead")
    stray = await _served_pvc(kube, namespace, name)
    shard = settings(namespace, ONE)
    standby = kube.fenced(lambda: False)
    resources = await owned_resources(standby, shard)
    selector = await owned_selector(standby, shard, resources)
    assert await bucket_label(kube, namespace, stray["metadata"]["name"]) is None
    assert selector == labels.MANAGED_SELECTOR, selector


# --- continuous mode -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(kube: Kube, shard: Settings):
    """A continuous reconciler in this process, stopped (exit 0) on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(Controller(kube, shard).run(stop))
    try:
        yield task
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def _reason(kube: Kube, namespace: str, name: str) -> str | None:
    return condition(await status_of(kube, namespace, name), "Degraded").get("reason")


async def test_continuous_shard_refuses_a_forged_token_secret_and_relabels_its_own(
    cluster, namespace
):
    """A continuous shard: a hand-made token Secret with a forged record is refused and left
    as it was; meanwhile the shard relabels its own stray PVC at its resync, and a human who
    moves the label away again sees it come back (once per resync, not a tight loop)."""
    kube = cluster.kube
    mine = name_on(ONE, namespace, "cont")
    stray = await _served_pvc(kube, namespace, mine)
    pvc_name = stray["metadata"]["name"]
    victim = name_on(ONE, namespace, "victim")
    before = await put(
        kube,
        hand_secret(namespace, victim, ours(victim), {OWNER: f"{namespace}/{victim}/gone"}),
    )
    await _sealed(kube, namespace, victim, "victim-token")
    shard = Settings(
        namespaces=(namespace,),
        shard=ONE,
        key_namespace=namespace,
        resync_seconds=2,
        health_port=0,
    )
    want = bucket_of(namespace, mine)
    async with running(kube, shard):
        await wait_for(
            lambda: _reason(kube, namespace, victim),
            timeout=60,
            message=f"{victim} reports its conflict",
        )
        assert await _reason(kube, namespace, victim) == "TokenSecretConflict"
        after = await kube.get(SECRET, namespace, f"{victim}-hub-token")
        assert after["data"] == before["data"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

        async def relabelled() -> bool:
            return await bucket_label(kube, namespace, pvc_name) == want

        await wait_for(relabelled, timeout=60, message="the stray relabelled at a resync")

        other = str((int(want) + 1) % 256)  # a human moves it to another shard's bucket
        await label_by_hand(kube, PVC, namespace, pvc_name, other)
        assert await bucket_label(kube, namespace, pvc_name) == other
        await wait_for(relabelled, timeout=60, message="the moved stray back at a resync")
        live = await kube.get(PVC, namespace, pvc_name)
        assert live["metadata"]["uid"] == stray["metadata"]["uid"]  # relabelled, not re-made


async def test_purge_keeps_a_hidden_adopted_pvc_and_finishes(cluster, namespace):
    """An adopted PVC (a migration) hidden from its shard by a moved label: the purge brings it
    back into sight (it is ours by adoption) but never deletes it, and still says Purged."""
    kube = cluster.kube
    name = name_on(ONE, namespace, "adopt")
    template = seed_template(namespace)
    template["spec"]["pvcs"][0]["resourceName"] = "claim-{jupyternetes.instance.name}"
    template["spec"]["pvcs"][0]["adopt"] = True
    await put(kube, template)
    made = await put(kube, pvc(namespace, f"claim-{name}", {"user-made": "yes"}))
    await put(kube, seed_instance(namespace, name))
    assert result_for(await once(kube, namespace), name).error == ""
    live = await kube.get(PVC, namespace, f"claim-{name}")
    assert live["metadata"]["annotations"]["jupyternetes-ssa.kadense.io/adopted"] == "true"
    await label_by_hand(kube, PVC, namespace, f"claim-{name}", None)
    purged = seed_instance(namespace, name)
    purged["spec"]["purge"] = True
    await put(kube, purged)
    shard = settings(namespace, ONE)
    resources = await owned_resources(kube, shard)

    async def purge_pass() -> dict:
        observed = await observe(kube, shard, resources)
        if await bucket_label(kube, namespace, f"claim-{name}") is None:
            observed.forget(live)  # hidden from the shard's selection
        observed.strays_of = lambda value: strays(kube, shard, resources, value)
        await reconcile_instance(kube, observed, observed.instances[(namespace, name)], shard)
        return await status_of(kube, namespace, name)

    async def purged_done() -> bool:
        return (await purge_pass()).get("phase") == "Purged"

    await wait_for(purged_done, timeout=60, message=f"{name} Purged")
    kept = await kube.get(PVC, namespace, f"claim-{name}")
    assert kept["metadata"]["uid"] == made["metadata"]["uid"]
    assert kept["metadata"]["labels"][labels.SHARD_BUCKET] == bucket_of(namespace, name)
