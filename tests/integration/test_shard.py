"""`--shard I/N` against a real apiserver: shards split the instances, collect only their own
orphans, and a re-shard (2 -> 3, old and new running at once) hands over without two
configurations writing at once and without deleting or re-creating anything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import rbac_audit
from reconcile_helpers import once, owned, put, seed_instance, seed_template, status_of
from test_deploy import (
    RBAC_KINDS,
    build,
    container_process,
    delete_cluster_scoped,
    free_port,
    install_identity,
    kubectl,  # noqa: F401 (a fixture)
    one,
    used_only_granted,
)
from test_gc import with_extras

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.handover import NAMED
from jupyternetes_ssa.kube import INSTANCE, LEASE, POD, PVC, Kube, NotLeading
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.names import safe_label_value, safe_name
from jupyternetes_ssa.reconcile import reconcile_once
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import Shard, shard_of

pytestmark = pytest.mark.integration

TIMING = {"lease_duration_seconds": 3.0, "renew_deadline_seconds": 2.0, "retry_period_seconds": 0.5}
LONG = "a-user-whose-server-name-is-far-longer-than-any-label-value-may-be-x"  # slugged labels


@dataclass
class Write:
    who: str
    method: str
    url: str
    start: float
    end: float


@dataclass
class Writes:
    """Every write a controller sends (lease traffic goes through the elector's own client and
    is not here). A spy on real requests, not a mock: each one still reaches the apiserver."""

    log: list[Write] = field(default_factory=list)

    def by(self, who: str) -> list[Write]:
        return [w for w in self.log if w.who == who]


class Recording(Kube):
    def __init__(self, api, writes: Writes, who: str):
        super().__init__(api)
        self.writes, self.who = writes, who

    def fenced(self, gate) -> Recording:
        other = Recording(self.api, self.writes, self.who)
        other._discovered, other.write_gate = self._discovered, gate
        return other

    async def request(self, method, res, namespace, url, **kwargs):
        if method == "GET":
            return await super().request(method, res, namespace, url, **kwargs)
        start = time.monotonic()
        try:
            return await super().request(method, res, namespace, url, **kwargs)
        except NotLeading:
            start = -1.0  # refused before it was sent
            raise
        finally:
            if start >= 0:
                self.writes.log.append(Write(self.who, method, url, start, time.monotonic()))


def settings(namespace: str, shard: Shard, who: str) -> Settings:
    return Settings(
        namespaces=(namespace,),
        key_namespace=namespace,
        health_port=0,
        resync_seconds=3600,
        leader_elect=True,
        lease_namespace=namespace,
        identity=who,
        shard=shard,
        **TIMING,
    )


@contextlib.asynccontextmanager
async def shards(cluster, namespace: str, count: int, writes: Writes):
    """`count` shard controllers in this event loop, stopped (Leases handed back) at the end."""
    controllers, stops, tasks = [], [], []
    for i in range(count):
        who = f"{count}-shards-{i}"
        kube = Recording(cluster.api, writes, who)
        controllers.append(Controller(kube, settings(namespace, Shard(i, count), who)))
        stops.append(asyncio.Event())
        tasks.append(asyncio.create_task(controllers[-1].run(stops[-1])))
    try:
        yield controllers
    finally:
        for stop in stops:
            stop.set()
        codes = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        assert codes == [0] * count, codes


def users(namespace: str, *counts: int, each: int = 2) -> list[str]:
    """Instance names giving every shard of every configuration in `counts` at least `each`
    instances (the namespace is part of the hash: names are picked per test)."""
    names: list[str] = []
    for i in range(10_000):
        short = [
            (c, k)
            for c in counts
            for k in range(c)
            if sum(shard_of(namespace, n, c) == k for n in names) < each
        ]
        if not short:
            return names
        name = f"user-{i}"
        if any(shard_of(namespace, name, c) == k for c, k in short):
            names.append(name)
    raise AssertionError("no such names")


async def _phase(kube: Kube, ns: str, name: str, phase: str = "Running") -> bool:
    return (await status_of(kube, ns, name)).get("phase") == phase


async def all_running(kube: Kube, ns: str, names: list[str]) -> bool:
    return all([await _phase(kube, ns, n) for n in names])


def share(namespace: str, names: list[str], shard: Shard) -> set[tuple[str, str]]:
    return {(namespace, n) for n in names if shard.owns(namespace, n)}


def object_names(instance: str) -> set[str]:
    return {safe_name(f"{instance}-notebook"), safe_name(f"{instance}-workspace")}


def instance_of_write(write: Write, names: list[str]) -> str | None:
    """The instance a write to an instance's status, pod or PVC was about (None: another kind,
    such as an Event, whose URL names no instance)."""
    plural, _, rest = write.url.partition("/")
    if plural == "jupyternotebookinstances":
        return rest.split("/")[0]
    if plural in ("pods", "persistentvolumeclaims"):
        return next(n for n in names if rest in object_names(n))
    return None


async def uids(kube: Kube, ns: str, names: list[str]) -> dict[str, str]:
    found = {}
    for n in names:
        pods, pvcs = await owned(kube, ns, safe_label_value(n))
        for obj in pods + pvcs:
            found[f"{obj['kind']} {obj['metadata']['name']}"] = obj["metadata"]["uid"]
    return found


# --- two shards split the instances ------------------------------------------------------------


async def test_two_once_passes_split_the_instances_with_none_served_twice(
    kube: Kube, namespace: str
):
    names = [*users(namespace, 2), LONG]
    await put(kube, seed_template(namespace))
    for n in names:
        await put(kube, seed_instance(namespace, n))

    first, second = await asyncio.gather(
        once(kube, namespace, shard=Shard(0, 2)), once(kube, namespace, shard=Shard(1, 2))
    )

    assert first.ok and second.ok
    served = [[r.instance.name for r in s.instances] for s in (first, second)]
    assert all(served), f"both shards must have work: {served}"
    assert sorted(served[0] + served[1]) == sorted(names), "every instance once, none twice"
    for shard, mine in zip((Shard(0, 2), Shard(1, 2)), served, strict=True):
        assert {(namespace, n) for n in mine} == share(namespace, names, shard)
    for n in names:
        pods, pvcs = await owned(kube, namespace, safe_label_value(n))
        assert len(pods) == 1 and len(pvcs) == 1, n

    again = await asyncio.gather(*(once(kube, namespace, shard=Shard(i, 2)) for i in range(2)))
    assert [[r.instance.name for r in s.instances] for s in again] == served
    assert all(o.action != "created" for s in again for r in s.instances for o in r.outcomes)
    assert not any(s.pruned for s in again)


async def test_two_continuous_shards_hold_and_write_only_their_own_instances(
    cluster, kube: Kube, namespace: str
):
    names = [*users(namespace, 2), LONG]
    await put(kube, seed_template(namespace))
    for n in names:
        await put(kube, seed_instance(namespace, n))
    writes = Writes()

    async with shards(cluster, namespace, 2, writes) as (zero, one):
        await wait_for(
            lambda: all_running(kube, namespace, names),
            timeout=120,
            message="every instance Running, served by its shard",
        )
        late = "late-arrival"
        await put(kube, seed_instance(namespace, late))
        await wait_for(
            lambda: _phase(kube, namespace, late), timeout=60, message="a new instance Running"
        )
        names.append(late)
        for controller in (zero, one):
            mine = share(namespace, names, controller.s.shard)
            assert mine, f"shard {controller.s.shard} must have work"
            assert set(controller.observed.instances) == mine, "its cache: its instances only"
            await wait_for(
                lambda c=controller, m=mine: set(c.wanted) == m,
                timeout=60,
                message=f"shard {controller.s.shard} reconciled each of its instances",
            )
            expected = {o for _, n in mine for o in object_names(n)}
            cached = {k[1] for store in controller.observed.owned.values() for k in store}
            assert cached == expected, "its cache: its pods and PVCs only"
            about = {k[1] for k, events in controller.observed.events.items() if events}
            assert about <= {safe_name(f"{n}-notebook") for _, n in mine}, "its pods' events"
        for who, controller in (("2-shards-0", zero), ("2-shards-1", one)):
            mine = {n for _, n in share(namespace, names, controller.s.shard)}
            touched = {instance_of_write(w, names) for w in writes.by(who)} - {None}
            assert touched == mine, f"{who} wrote for {touched - mine} too"
        assert not [w for w in writes.log if w.method == "DELETE"]
    for i in range(2):
        lease = await kube.get(LEASE, namespace, f"jupyternetes-ssa-{i}-of-2")
        assert lease["spec"]["holderIdentity"] == "", "each shard its own Lease, handed back"


# --- garbage collection: only the orphan's own shard ---------------------------------------------


async def test_an_orphan_is_collected_by_its_own_shard_only(kube: Kube, namespace: str):
    await put(kube, with_extras(seed_template(namespace)))
    name = "orphaned"
    home = Shard(shard_of(namespace, name, 2), 2)
    other = Shard(1 - home.index, 2)
    await put(kube, seed_instance(namespace, name))
    assert (await once(kube, namespace, shard=home)).ok
    scratch = await kube.get(PVC, namespace, f"{name}-scratch")
    assert not scratch["metadata"].get("ownerReferences"), "left to our GC, not Kubernetes'"

    await kube.delete(INSTANCE, namespace, name)
    by_other = await once(kube, namespace, shard=other)

    assert by_other.pruned == [] and by_other.kept == []
    assert (await kube.get(PVC, namespace, f"{name}-scratch"))["metadata"]["uid"] == (
        scratch["metadata"]["uid"]
    )

    by_home = await once(kube, namespace, shard=home)

    assert {c.ref.name for c in by_home.pruned} >= {f"{name}-scratch"}
    assert f"{name}-workspace" in {c.ref.name for c in by_home.kept}, "user data is kept"


async def test_an_object_whose_instance_cannot_be_told_is_touched_by_no_shard(
    kube: Kube, namespace: str
):
    """Made before owner records existed, for an instance whose label is a hashed slug: no
    shard can tell whose it is, so none collects it (unsharded, it would be collected)."""
    legacy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "legacy",
            "namespace": namespace,
            "labels": {
                labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                labels.INSTANCE: safe_label_value(LONG),
            },
        },
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }
    await kube.apply(legacy, field_manager=FIELD_MANAGER)
    unsharded = await once(kube, namespace, dry_run=True)
    assert [c.ref.name for c in unsharded.pruned] == ["legacy"], "an orphan when unsharded"

    passes = [await once(kube, namespace, shard=Shard(i, 2)) for i in range(2)]

    assert all(p.pruned == [] for p in passes)
    assert await kube.get(POD, namespace, "legacy") is not None


# --- re-shard: 2 -> 3 with old and new running at once -------------------------------------------


async def _named(kube: Kube, namespace: str) -> str | None:
    lease = await kube.get(LEASE, namespace, "jupyternetes-ssa-shards")
    return ((lease or {}).get("metadata", {}).get("annotations") or {}).get(NAMED)


async def test_a_reshard_from_two_to_three_hands_over_without_overlap_or_loss(
    cluster, kube: Kube, namespace: str
):
    def moves(name: str) -> bool:
        return shard_of(namespace, name, 2) != shard_of(namespace, name, 3)

    names = users(namespace, 2, 3)
    names += [n for n in (f"mover-{i}" for i in range(50)) if moves(n)][:2]
    assert sum(map(moves, names)) >= 2, "instances that change shard"
    await put(kube, seed_template(namespace))
    for n in names:
        await put(kube, seed_instance(namespace, n))
    writes = Writes()

    async with contextlib.AsyncExitStack() as old_stack:
        old = await old_stack.enter_async_context(shards(cluster, namespace, 2, writes))
        await wait_for(
            lambda: all_running(kube, namespace, names), timeout=180, message="all Running (N=2)"
        )
        assert await _named(kube, namespace) == "2"
        before = await uids(kube, namespace, names)
        assert len(before) == 2 * len(names)

        async with shards(cluster, namespace, 3, writes) as new:
            await wait_for(
                lambda: all(c.synced() for c in new),
                timeout=60,
                message="the waiting N=3 shards are ready (caches synced)",
            )
            late = "during-the-rollout"
            await put(kube, seed_instance(namespace, late))
            await wait_for(
                lambda: _phase(kube, namespace, late),
                timeout=60,
                message="a new instance is served by N=2 while N=3 waits",
            )
            assert not any(c.leading for c in new) and all(c.leading for c in old)
            assert not [w for w in writes.log if w.who.startswith("3-")], "N=3 wrote early"
            names.append(late)
            before.update(await uids(kube, namespace, [late]))

            handed_over = time.monotonic()
            await old_stack.aclose()  # the rollout stops the old pods: they hand their Leases back

            await wait_for(lambda: all(c.leading for c in new), timeout=60, message="N=3 leads")
            assert await _named(kube, namespace) == "3"
            for controller in new:
                mine = share(namespace, names, controller.s.shard)
                await wait_for(
                    lambda c=controller, m=mine: set(c.wanted) == m,
                    timeout=120,
                    message=f"shard {controller.s.shard} reconciled each of its instances",
                )
            after_reshard = "after-the-rollout"
            await put(kube, seed_instance(namespace, after_reshard))
            await wait_for(
                lambda: _phase(kube, namespace, after_reshard),
                timeout=60,
                message="a new instance is served by N=3",
            )
            took = time.monotonic() - handed_over

    old_writes = [w for w in writes.log if w.who.startswith("2-")]
    new_writes = [w for w in writes.log if w.who.startswith("3-")]
    assert old_writes and new_writes
    assert max(w.end for w in old_writes) < min(w.start for w in new_writes), (
        "a write of N=3 started before the last of N=2 ended"
    )
    assert not [w for w in writes.log if w.method == "DELETE"], "nothing deleted"
    assert await uids(kube, namespace, names) == before, "no pod or PVC re-created"
    assert await all_running(kube, namespace, names)
    assert took < 60, took


# --- the shipped StatefulSet: its shards as processes, with its rights and no more --------------


async def test_the_sharded_statefulset_splits_the_work_with_its_own_rights_and_no_more(
    cluster,
    kubectl: str,  # noqa: F811 (test_deploy's fixture)
    kube: Kube,
    namespace: str,
    tmp_path: Path,
):
    """examples/deploy/sharded: pod i of the StatefulSet, as a local process holding only its
    ServiceAccount's token (as test_deploy does for the Deployment), runs shard i of 2 on its
    own Lease; every instance converges; every request is granted, and the Lease Role's every
    right is used."""
    suffix = f"-{namespace}"  # the ClusterRole and its binding are cluster-wide: unique names
    docs = await build(kubectl, "sharded", tmp_path, namespace, suffix)
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    statefulset = one(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 2
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    names = users(namespace, 2, each=1)
    await put(kube, seed_template(namespace))
    for n in names:
        await put(kube, seed_instance(namespace, n))
    procs: list[subprocess.Popen] = []
    try:
        identity = await install_identity(
            cluster,
            kubectl,
            rbac,
            namespace,
            pod["serviceAccountName"],
            tmp_path / "sharded.kubeconfig",
            ("patch", "pods", ""),
            ("update", "leases", "coordination.k8s.io"),
        )
        for i in range(2):
            pod_name = f"{statefulset['metadata']['name']}-{i}"
            index = {"apps.kubernetes.io/pod-index": str(i)}
            argv, env = container_process(container, namespace, pod_name, index)
            assert f"--shard={i}/2" in argv and "--leader-elect" in argv
            argv = [
                f"--health-port={free_port()}" if a.startswith("--health-port") else a for a in argv
            ]
            env = {**os.environ, **env, "KUBECONFIG": str(identity)}
            with (tmp_path / f"shard-{i}.log").open("w") as out:
                procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT))
        await wait_for(
            lambda: all_running(kube, namespace, names),
            timeout=120,
            message=f"every instance Running (logs: {tmp_path}/shard-*.log)",
        )
        for i in range(2):
            lease = await kube.get(LEASE, namespace, f"jupyternetes-ssa-{i}-of-2")
            assert lease["spec"]["holderIdentity"] == f"{statefulset['metadata']['name']}-{i}"
        assert await _named(kube, namespace) == "2"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(proc.wait, 30) for proc in procs]
        await delete_cluster_scoped(cluster, kubectl, rbac)
    assert codes == [0, 0], [(tmp_path / f"shard-{i}.log").read_text()[-2000:] for i in range(2)]
    used_only_granted(cluster, identity, rbac)
    if cluster.local is not None:
        used = rbac_audit.uses(cluster.local.audit_log, rbac_audit.credential(identity))
        leases_role = [
            d for d in rbac if d["kind"] == "Role" and "leader-election" in d["metadata"]["name"]
        ]
        assert leases_role and not rbac_audit.never_used(rbac_audit.rules(leases_role), used, {})


async def test_shards_wait_for_the_unsharded_reconciler_to_hand_its_lease_back(
    cluster, kube: Kube, namespace: str
):
    """From one reconciler to two shards: the shards are ready but write nothing while the
    unsharded reconciler holds `jupyternetes-ssa`; once it stops, they name N=2 and serve."""
    names = users(namespace, 2, each=1)
    await put(kube, seed_template(namespace))
    writes = Writes()
    single = Controller(
        Recording(cluster.api, writes, "1-single"),
        settings(namespace, Shard(), "single"),
    )
    stop_single = asyncio.Event()
    single_task = asyncio.create_task(single.run(stop_single))
    try:
        await wait_for(lambda: single.leading, timeout=60, message="the unsharded one leads")
        async with shards(cluster, namespace, 2, writes) as pair:
            await wait_for(
                lambda: all(c.synced() for c in pair), timeout=60, message="shards ready"
            )
            for n in names:
                await put(kube, seed_instance(namespace, n))
            await wait_for(
                lambda: all_running(kube, namespace, names),
                timeout=120,
                message="served by the unsharded reconciler",
            )
            assert not any(c.leading for c in pair)
            assert await _named(kube, namespace) is None

            stop_single.set()
            assert await asyncio.wait_for(single_task, timeout=60) == 0
            await wait_for(lambda: all(c.leading for c in pair), timeout=60, message="shards lead")
            assert await _named(kube, namespace) == "2"
            late = "after-the-switch"
            await put(kube, seed_instance(namespace, late))
            await wait_for(
                lambda: _phase(kube, namespace, late), timeout=60, message="served by its shard"
            )
    finally:
        stop_single.set()
        await asyncio.gather(single_task, return_exceptions=True)
    single_writes = writes.by("1-single")
    shard_writes = [w for w in writes.log if w.who.startswith("2-")]
    assert single_writes and shard_writes
    assert max(w.end for w in single_writes) < min(w.start for w in shard_writes)


# --- hostile ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def another_namespace(kube: Kube, namespace: str):
    """A second namespace (the `namespace` fixture gives one), deleted afterwards."""
    name = f"{namespace}-b"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await kube.call("POST", "/api/v1/namespaces", body=body)
    account = f"/api/v1/namespaces/{name}/serviceaccounts/default"
    try:
        await wait_for(
            lambda: kube.call("GET", account, ignore=(404,)), timeout=60, message=account
        )
        yield name
    finally:
        await kube.call("DELETE", f"/api/v1/namespaces/{name}", ignore=(404,))


async def test_one_name_in_two_namespaces_is_two_instances_each_served_once(
    kube: Kube, namespace: str
):
    """A user picks the name another team's server has, hoping to share its shard (or its
    objects): the namespace is part of the key, each is served once, each by its own shard."""
    async with another_namespace(kube, namespace) as other:
        name = next(
            n
            for n in (f"jovyan-{i}" for i in range(100))
            if shard_of(namespace, n, 2) != shard_of(other, n, 2)
        )
        for ns in (namespace, other):
            await put(kube, seed_template(ns))
            await put(kube, seed_instance(ns, name))
        both = Settings(namespaces=(namespace, other), key_namespace=namespace)

        passes = await asyncio.gather(
            *(reconcile_once(kube, replace(both, shard=Shard(i, 2))) for i in range(2))
        )

        served = sorted(
            (i, r.instance.namespace, r.instance.name)
            for i, summary in enumerate(passes)
            for r in summary.instances
        )
        assert served == sorted((shard_of(ns, name, 2), ns, name) for ns in (namespace, other))
        assert all(summary.ok for summary in passes)
        for ns in (namespace, other):
            pods, pvcs = await owned(kube, ns, name)
            assert len(pods) == 1 and len(pvcs) == 1
            record = pods[0]["metadata"]["annotations"]["jupyternetes-ssa.kadense.io/owner"]
            assert record.startswith(f"{ns}/{name}/")


async def test_a_bad_shard_value_is_refused_before_anything_is_read_or_written(
    cluster, kube: Kube, namespace: str, tmp_path: Path
):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    for value in ("2/2", "1/0", "-1/2", "1/2/3", "0/257", "half"):
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "jupyternetes_ssa",
                "reconcile",
                "--once",
                "-n",
                namespace,
                f"--shard={value}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (value, done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: --shard {value!r}") and "I/N" in line, line
        assert "Traceback" not in done.stderr and done.stdout == ""
    assert (await owned(kube, namespace, "jovyan")) == ([], []), "nothing was applied"
