"""Hostile tests for issue 16's changes (creates without a dry-run, paced status, aiohttp requests,
packed caches, shards), written by a reviewer who read the README and the issue only."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from faults import FlakyApi
from reconcile_helpers import (
    TEST_MANAGER,
    condition,
    once,
    owned,
    put,
    result_for,
    seed_instance,
    seed_template,
    status_of,
)

from jupyternetes_ssa import local_cluster
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.kube import PVC, Kube, _Http
from jupyternetes_ssa.leader import LeaderElector
from jupyternetes_ssa.local_cluster import identity
from jupyternetes_ssa.observe import observe, owned_resources
from jupyternetes_ssa.reconcile import reconcile_instance
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import Shard, shard_of
from jupyternetes_ssa.spawner import JupyternetesSpawner


def _hand_made_pod(namespace: str, name: str) -> dict:
    """A pod someone else made (no label, no owner record of ours): invisible to our lists."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "someone/else"}]},
    }


async def test_a_pod_name_taken_by_another_leaves_its_pod_alone(cluster, namespace):
    """A pod of the rendered name made by someone else (invisible to our label-selected lists):
    the instance reports NameConflict naming it, that pod is untouched, and the PVC made first
    is ours, kept for the start after the conflict is resolved (README, The reconciler)."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    theirs = await put(kube, _hand_made_pod(namespace, "alice-notebook"))
    await put(kube, seed_instance(namespace, "alice"))

    summary = await once(kube, namespace)

    result = result_for(summary, "alice")
    assert result.reason == "NameConflict", result.error
    assert f"Pod {namespace}/alice-notebook already exists" in result.error
    live = await kube.call("GET", f"/api/v1/namespaces/{namespace}/pods/alice-notebook")
    assert live["metadata"]["uid"] == theirs["metadata"]["uid"]
    assert "managedFields" not in live["metadata"] or all(
        m["manager"] != "jupyternetes-ssa" for m in live["metadata"]["managedFields"]
    )
    _, pvcs = await owned(kube, namespace, "alice")
    assert [p["metadata"]["name"] for p in pvcs] == ["alice-workspace"]


async def _quota_refusing_pods(kube: Kube, namespace: str) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods", "namespace": namespace},
        "spec": {"hard": {"pods": "0"}},
    }
    await kube.apply(quota, field_manager=TEST_MANAGER)
    path = f"/api/v1/namespaces/{namespace}/resourcequotas/no-pods"

    async def computed():
        live = await kube.call("GET", path)
        return (live.get("status") or {}).get("hard")

    await local_cluster.wait_for(computed, timeout=60, message="quota status computed")


async def test_quota_refusal_keeps_the_new_pvc_and_deletes_nothing(cluster, namespace):
    """A pod refused by a quota after its PVC was created: the instance says why, the PVC
    (new, empty, ours) stays for the next start, and nothing is deleted."""
    kube = cluster.kube
    await _quota_refusing_pods(kube, namespace)
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "bob"))

    summary = await once(kube, namespace)

    result = result_for(summary, "bob")
    assert result.error and "quota" in result.error, result.error
    assert condition(await status_of(kube, namespace, "bob"), "Degraded")["status"] == "True"
    pvcs = await kube.list(PVC, namespace)
    assert [p["metadata"]["name"] for p in pvcs.items] == ["bob-workspace"]
    assert not pvcs.items[0]["metadata"].get("deletionTimestamp")
    assert _pvc_deletes(cluster, namespace) == 0


def _pvc_deletes(cluster, namespace: str) -> int:
    """Deletes of PVCs in `namespace` answered 200 (the apiserver's audit log)."""
    count = 0
    for line in cluster.local.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if (
            event.get("stage") == "ResponseComplete"
            and event.get("verb") == "delete"
            and ref.get("resource") == "persistentvolumeclaims"
            and ref.get("namespace") == namespace
            and (event.get("responseStatus") or {}).get("code") == 200
        ):
            count += 1
    return count


async def test_refused_start_does_not_provision_a_volume_per_retry(cluster, namespace):
    """A start the cluster refuses (quota on pods) is retried by every pass (continuous mode:
    with backoff, forever). Before issue 16 the dry-run refused it and nothing was written; now
    every retry creates the PVC, the provisioner (an Immediate StorageClass, as the local one and
    most cloud ones) makes a real volume for it, and the undo deletes both again: the refused
    server costs a PVC (and volume) create+delete per retry. Three passes must not make three."""
    kube = cluster.kube
    await _quota_refusing_pods(kube, namespace)
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "carol"))
    uids = set()
    for _ in range(3):
        summary = await once(kube, namespace)
        assert result_for(summary, "carol").error
        uids |= {p["metadata"]["uid"] for p in (await kube.list(PVC, namespace)).items}
    assert len(uids) == 1, "one PVC, made once and kept, whatever the number of retries"
    assert _pvc_deletes(cluster, namespace) == 0


LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
]


async def _rotate_token(cluster, namespace: str, name: str, kubeconfig) -> None:
    """Every token of the account stops working (401) and the kubeconfig gets a new one: what
    an expired token and a credential refresh look like to a client."""
    kube = cluster.kube
    await kube.call("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}

    async def recreated():
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        return await kube.call("POST", path, body=body, ignore=(409,))

    await local_cluster.wait_for(recreated, timeout=30, message="account re-created")
    token = await identity.request_token(cluster.api, namespace, name)
    identity.token_kubeconfig(cluster.kubeconfig, token, kubeconfig, namespace)


async def _refused(kube: Kube, token: str, path: str) -> bool:
    """Whether the apiserver now refuses `token` (a raw request: no client re-authenticates)."""
    auth = kube.api.auth
    connector = aiohttp.TCPConnector(ssl=await auth.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{auth.server}{path}", headers=headers) as resp:
            return resp.status == 401


async def test_leader_renews_its_lease_after_the_token_is_refreshed(
    cluster, namespace, sa_kubeconfig
):
    """kube.py: a 401 re-reads the credentials ("an expired token: the only time to
    re-connect"). The leader elector makes its own Kube (one attempt per call, so it never
    re-authenticates itself) and, since issue 16, that Kube has its own aiohttp session with the
    bearer token of its first request baked into its headers. Once that token is refused (the
    account's tokens are invalidated, as an expired one is) and the kubeconfig holds a fresh
    one, the reconciler's main client re-authenticates on its 401 and goes on, but every lease
    renewal keeps sending the dead token: the leader loses its lease and exits 1, and a replica
    on those credentials never leads again until restarted."""
    path = await sa_kubeconfig(LEASE_RULES, name="leader")
    kube = await Kube.connect(kubeconfig=str(path))
    settings = Settings(lease_namespace=namespace, identity="me", leader_elect=True, health_port=0)
    elector = LeaderElector(kube, settings)
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    old = kube.api.auth.token
    try:
        assert await elector.try_acquire_or_renew()
        await _rotate_token(cluster, namespace, "leader", path)
        await local_cluster.wait_for(
            lambda: _refused(kube, old, configmaps), timeout=90, message="old token refused"
        )
        # The elector's single attempts meet the 401 first: it must re-read the credentials.
        renewed = [await elector.try_acquire_or_renew() for _ in range(3)]
        assert all(renewed), "the lease is not renewed with the refreshed credentials"
        assert kube.api.auth.token != old
    finally:
        await kube.close()


async def test_refused_start_is_retried_with_backoff_not_by_its_own_undo(cluster, namespace):
    """Continuous mode retries a failed instance with exponential backoff (queue.py). A refused
    start now writes: it creates the PVC and deletes it again, and the watch events of that PVC
    (added, bound, deleted) re-queue the instance at once, past its backoff. Each pass makes the
    next one: a hot loop of PVC (and, with an Immediate StorageClass, volume) creates and deletes
    for as long as the quota refuses the pod. With a 10 s backoff, 25 s allow at most 3 passes."""
    kube = cluster.kube
    await _quota_refusing_pods(kube, namespace)
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "dave"))
    own = await Kube.connect(kubeconfig=str(cluster.kubeconfig))
    settings = Settings(
        namespaces=(namespace,), key_namespace=namespace, health_port=0, backoff_base=10.0
    )
    stop = asyncio.Event()
    running = asyncio.create_task(Controller(own, settings).run(stop))
    try:

        async def degraded():
            return (
                condition(await status_of(kube, namespace, "dave"), "Degraded").get("status")
                == "True"
            )

        await local_cluster.wait_for(degraded, timeout=60, message="dave Degraded")
        started = time.monotonic()
        try:
            await local_cluster.wait_for(
                lambda: _pvc_deletes(cluster, namespace) >= 5, timeout=25, message="5 undos"
            )
        except TimeoutError:
            pass
        else:
            raise AssertionError(
                f"{_pvc_deletes(cluster, namespace)} PVCs created and undone within "
                f"{time.monotonic() - started:.1f} s, with a 10 s backoff: the undo's own watch "
                "events re-queue the instance"
            )
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=30)
        await own.close()


async def test_concurrent_first_requests_open_one_session(cluster, namespace, monkeypatch):
    """kube.py _Http opens its aiohttp session lazily, and opening awaits (the SSL context):
    the concurrent first requests of a client (a reconciler's workers, a hub's spawns) each
    opened a session of their own, and all but the last were dropped unclosed. Every session
    a client opens is recorded here (a spy on the real opener, nothing replaced): after
    close(), each one must be closed."""
    opened: list[aiohttp.ClientSession] = []
    real = _Http._new_session

    async def recorded(self):
        session = await real(self)
        opened.append(session)
        return session

    monkeypatch.setattr(_Http, "_new_session", recorded)
    maps = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"m{i}", "namespace": namespace},
        }
        for i in range(8)
    ]
    for first in ("GET", "apply"):  # a plain request first; an apply first (discovery, then)
        kube = await Kube.connect(kubeconfig=str(cluster.kubeconfig))
        if first == "GET":
            path = f"/api/v1/namespaces/{namespace}/configmaps"
            await asyncio.gather(*(kube.call("GET", path) for _ in range(8)))
        await asyncio.gather(*(kube.apply(m, field_manager=TEST_MANAGER) for m in maps))
        await kube.close()
    assert len(opened) == 2, f"{len(opened)} sessions for 2 clients"
    assert all(s.closed for s in opened)


async def test_requests_in_flight_survive_a_token_refresh(cluster, namespace, sa_kubeconfig):
    """A 401 re-authenticates and closes the aiohttp session, under every other request in
    flight on it; each of those then gets its own 401 and closes the session again. Every
    request of a burst sent after the token expired must still succeed within its retries."""
    path = await sa_kubeconfig(LEASE_RULES, name="burst")
    kube = await Kube.connect(kubeconfig=str(path))
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    old = kube.api.auth.token
    try:
        await kube.call("GET", configmaps)
        await _rotate_token(cluster, namespace, "burst", path)
        await local_cluster.wait_for(
            lambda: _refused(kube, old, configmaps), timeout=90, message="old token refused"
        )
        answers = await asyncio.gather(
            *(kube.call("GET", configmaps) for _ in range(32)), return_exceptions=True
        )
        failed = [a for a in answers if isinstance(a, BaseException)]
        assert failed == [], f"{len(failed)} of 32 requests failed: {failed[:3]}"
    finally:
        await kube.close()


async def test_a_stale_status_never_lands_on_a_re_created_instance(cluster, namespace):
    """A status computed for an instance (a watch-lagged cache, or a write held back by the
    status pacing and done from the cache later) is applied by name only (reconcile.py
    write_status: no uid in the body). When the hub stopped the server and started it again
    under the same name meanwhile (a new uid), the old incarnation's status lands on the new
    one: Ready=True with the old pod's address and observedGeneration 1, which is exactly what
    the spawner's _ready_url accepts, so the hub is handed the address of a pod that is gone.
    The write must be refused (the status apply can carry metadata.uid as a precondition)."""
    kube = cluster.kube
    settings = Settings(namespaces=(namespace,), key_namespace=namespace, health_port=0)
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "erin"))

    async def ready():
        await once(kube, namespace)
        return condition(await status_of(kube, namespace, "erin"), "Ready").get("status") == "True"

    await local_cluster.wait_for(ready, timeout=120, interval=1, message="erin Ready")
    stale = await observe(kube, settings, await owned_resources(kube, settings))
    old = stale.instances[(namespace, "erin")]
    old = {**old, "status": {}}  # as a lagging cache holds it: its last status not yet seen

    instance_path = f"/apis/kadense.io/v1/namespaces/{namespace}/jupyternotebookinstances/erin"
    await kube.call("DELETE", instance_path)
    await local_cluster.wait_for(
        lambda: _absent(kube, instance_path), timeout=60, message="erin gone"
    )
    new = await put(kube, seed_instance(namespace, "erin"))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]

    await reconcile_instance(kube, stale, old, settings)

    status = await status_of(kube, namespace, "erin")
    assert status == {}, (
        "the old incarnation's status was written onto the new one: "
        f"Ready={condition(status, 'Ready').get('status')}, "
        f"pods={status.get('pods')}"
    )


async def _absent(kube: Kube, path: str) -> bool:
    return await kube.call("GET", path, ignore=(404,)) is None


async def test_a_pod_create_that_times_out_undoes_nothing(cluster, namespace):
    """Holds up: 503s on the pod's create (FAULT INJECTION: the apiserver cannot be asked for a
    503 on demand): the PVC made before is kept for the next pass, which creates the pod and
    converges on the same PVC."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "fred"))
    flaky = Kube(FlakyApi(cluster.api, [503] * 6, url_part="pods/fred-notebook"))
    summary = await once(flaky, namespace)
    assert flaky.http is None and result_for(summary, "fred").error
    pods, pvcs = await owned(kube, namespace, "fred")
    assert pods == [] and len(pvcs) == 1
    uid = pvcs[0]["metadata"]["uid"]
    summary = await once(kube, namespace)
    assert not result_for(summary, "fred").error, result_for(summary, "fred").error
    pods, pvcs = await owned(kube, namespace, "fred")
    assert len(pods) == 1 and [p["metadata"]["uid"] for p in pvcs] == [uid]


async def test_the_spawner_shares_one_client_for_every_start_and_stop(cluster, namespace):
    """A client holds a connection pool: JupyternetesSpawner used to make one per start, stop
    and delete_forever and never close it (an "Unclosed client session" error per call in the
    hub's log). Every call of a hub now gets the same client."""
    spawners = [JupyternetesSpawner(kubeconfig=str(cluster.kubeconfig)) for _ in range(3)]
    clients = {id(await s._kube()) for s in spawners for _ in range(2)}
    assert len(clients) == 1, "one client per hub, not one per start or stop"
    await (await spawners[0]._kube()).call("GET", f"/api/v1/namespaces/{namespace}/configmaps")


async def test_a_refused_start_does_not_release_the_users_static_volume(cluster, namespace):
    """Static provisioning: the admin made one PersistentVolume per user (reclaim policy
    Retain, the default for hand-made PVs) and the template binds the user's PVC to it with
    `volumeName`. One start refused by a full quota now creates the PVC, which binds the
    user's volume, and the undo deletes the PVC: the volume is Released (its claimRef keeps the
    deleted claim's uid) and no later PVC can bind it. Once the quota has room, the user's
    server never starts with its volume again (its PVC stays Pending) until an admin edits the
    PV by hand. (With reclaim policy Delete, the undo deletes the user's data outright.)
    Before issue 16 the dry-run refused the start and nothing was bound."""
    kube = cluster.kube
    volume_name = f"home-{namespace}"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "manual",
            "hostPath": {"path": f"/tmp/{volume_name}", "type": "DirectoryOrCreate"},
        },
    }
    await kube.apply(volume, field_manager=TEST_MANAGER)
    template = seed_template(namespace)
    template["spec"]["pvcs"][0]["spec"].update(
        {"storageClassName": "manual", "volumeName": volume_name}
    )
    await _quota_refusing_pods(kube, namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "gina"))
    volume_path = f"/api/v1/persistentvolumes/{volume_name}"
    try:
        summary = await once(kube, namespace)
        assert "quota" in result_for(summary, "gina").error
        await kube.call("DELETE", f"/api/v1/namespaces/{namespace}/resourcequotas/no-pods")

        async def served_with_its_volume():
            await once(kube, namespace)
            _, pvcs = await owned(kube, namespace, "gina")
            bound = [p for p in pvcs if (p.get("status") or {}).get("phase") == "Bound"]
            return bound or None

        try:
            await local_cluster.wait_for(served_with_its_volume, timeout=60, interval=2)
        except TimeoutError:
            live = await kube.call("GET", volume_path)
            raise AssertionError(
                f"the user's volume is {live['status'].get('phase')} with claimRef uid "
                f"{live['spec'].get('claimRef', {}).get('uid')}; gina's PVC never binds"
            ) from None
    finally:
        await kube.call("DELETE", volume_path, ignore=(404,))


def _names_on_shards(namespace: str, count: int = 2) -> list[str]:
    """One instance name per shard of `count`."""
    found: dict[int, str] = {}
    for n in range(1000):
        found.setdefault(shard_of(namespace, f"user{n}", count), f"user{n}")
        if len(found) == count:
            return [found[i] for i in range(count)]
    raise AssertionError("no names for every shard")


async def test_a_name_collision_across_shards_never_gives_the_loser_the_winners_pod(
    cluster, namespace
):
    """Two instances whose templates render one pod name (`resourceName: "{team}-shared"`,
    README Ownership) on different shards: shard 1's caches never hold shard 0's objects, so
    the second instance takes the create path and finds the name taken. The first owner keeps
    its pod, untouched; the loser reports NameConflict (its own PVC, made first, is kept)."""
    kube = cluster.kube
    template = seed_template(namespace)
    template["spec"]["pods"][0]["resourceName"] = "{team}-shared"
    await put(kube, template)
    first, second = _names_on_shards(namespace)
    await put(kube, seed_instance(namespace, first, team="physics"))
    await once(kube, namespace, shard=Shard(0, 2))
    path = f"/api/v1/namespaces/{namespace}/pods/physics-shared"
    before = await kube.call("GET", path)
    await put(kube, seed_instance(namespace, second, team="physics"))

    summary = await once(kube, namespace, shard=Shard(1, 2))

    assert result_for(summary, second).reason == "NameConflict"
    after = await kube.call("GET", path)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    ours = [m for m in after["metadata"]["managedFields"] if m["manager"] == "jupyternetes-ssa"]
    assert ours == [
        m for m in before["metadata"]["managedFields"] if m["manager"] == "jupyternetes-ssa"
    ], "the loser's shard wrote to the winner's pod"
    assert after["metadata"]["annotations"]["jupyternetes-ssa.kadense.io/owner"].startswith(
        f"{namespace}/{first}/"
    )
