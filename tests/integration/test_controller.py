"""Continuous mode against a real apiserver: watch-driven converge, requeues, GC, probes, leases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import httpx
import pytest
from faults import FlakyApi
from reconcile_helpers import (
    condition,
    edited,
    notebook_container,
    put,
    seed_instance,
    seed_template,
    status_of,
)

from jupyternetes_ssa import FIELD_MANAGER
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import INSTANCE, LEASE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import procs, wait_for
from jupyternetes_ssa.local_cluster.cluster import child_env
from jupyternetes_ssa.settings import Settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def running(kube: Kube, settings: Settings):
    """A controller running in this event loop until the block ends (then stopped cleanly)."""
    controller = Controller(kube, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        yield controller
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def settings_for(namespace: str, **kw) -> Settings:
    base = Settings(
        namespaces=(namespace,),
        health_port=free_port(),
        health_host="127.0.0.1",
        resync_seconds=3600,
        lease_namespace=namespace,
    )
    return replace(base, **kw)


async def pod_image(kube: Kube, ns: str, name: str) -> str | None:
    pod = await kube.get(POD, ns, name)
    return pod["spec"]["containers"][0]["image"] if pod else None


async def test_watches_converge_new_instances_template_changes_and_deletions(
    kube: Kube, namespace: str
):
    template = seed_template(namespace)
    template["spec"]["pods"][0]["updateStrategy"] = "InPlace"  # a change reaches running pods
    await put(kube, template)
    async with running(kube, settings_for(namespace)):
        await put(kube, seed_instance(namespace, "alice"))
        await wait_for(
            lambda: _phase(kube, namespace, "alice", "Running"),
            timeout=30,
            message="alice Running in status",
        )
        status = await status_of(kube, namespace, "alice")
        assert status["pods"]["notebook"]["podAddress"].startswith("127.")

        new_image = "quay.io/jupyter/base-notebook:hub-5.2.1"
        await put(kube, edited(template, lambda t: notebook_container(t).update(image=new_image)))
        await wait_for(
            lambda: _eq(pod_image(kube, namespace, "alice-notebook"), new_image),
            timeout=30,
            message="template change reaches the pod",
        )

        await kube.delete(INSTANCE, namespace, "alice")
        await wait_for(
            lambda: _absent(kube, POD, namespace, "alice-notebook"),
            timeout=30,
            message="pod of the deleted instance gone",
        )
        assert await kube.get(PVC, namespace, "alice-workspace") is not None


async def _phase(kube, ns, name, phase) -> bool:
    return (await status_of(kube, ns, name)).get("phase") == phase


async def _eq(awaitable, expected) -> bool:
    return await awaitable == expected


async def _absent(kube, res, ns, name) -> bool:
    live = await kube.get(res, ns, name)
    return live is None or bool(live["metadata"].get("deletionTimestamp"))


async def test_a_deleted_pod_is_recreated_and_status_shows_the_gap(kube: Kube, namespace: str):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "bob"))
    async with running(kube, settings_for(namespace)):
        await wait_for(
            lambda: _phase(kube, namespace, "bob", "Running"), timeout=30, message="bob Running"
        )
        uid = (await kube.get(POD, namespace, "bob-notebook"))["metadata"]["uid"]

        await kube.delete(POD, namespace, "bob-notebook")

        async def replaced() -> bool:
            pod = await kube.get(POD, namespace, "bob-notebook")
            return bool(pod) and pod["metadata"]["uid"] != uid

        await wait_for(replaced, timeout=30, message="pod re-created")
        await wait_for(
            lambda: _phase(kube, namespace, "bob", "Running"),
            timeout=30,
            message="bob Running again",
        )


async def test_a_failed_pod_shows_in_status_with_its_reason(kube: Kube, namespace: str):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "carol"))
    async with running(kube, settings_for(namespace)):
        await wait_for(
            lambda: _phase(kube, namespace, "carol", "Running"), timeout=30, message="carol Running"
        )
        pod = await kube.get(POD, namespace, "carol-notebook")
        pod["status"]["phase"] = "Failed"
        pod["status"]["reason"] = "Evicted"
        pod["status"]["message"] = "The node was low on resource: memory."
        await kube.request(
            "PUT", POD, namespace, "pods/carol-notebook/status", content=json.dumps(pod)
        )

        await wait_for(
            lambda: _phase(kube, namespace, "carol", "Failed"),
            timeout=30,
            message="carol Failed in status",
        )
        status = await status_of(kube, namespace, "carol")
        degraded = condition(status, "Degraded")
        assert degraded["status"] == "True"
        assert "low on resource" in degraded["message"]
        assert condition(status, "Ready")["status"] == "False"


async def test_health_readiness_and_metrics(kube: Kube, namespace: str):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "dave"))
    settings = settings_for(namespace)
    base = f"http://127.0.0.1:{settings.health_port}"
    async with running(kube, settings), httpx.AsyncClient(base_url=base) as http:
        await wait_for(lambda: _status_code(http, "/readyz", 200), timeout=30, message="ready")
        assert (await http.get("/healthz")).status_code == 200
        await wait_for(
            lambda: _phase(kube, namespace, "dave", "Running"), timeout=30, message="dave Running"
        )
        metrics = (await http.get("/metrics")).text
        assert 'jupyternetes_applies_total{action="created"} 2.0' in metrics
        assert "jupyternetes_queue_depth" in metrics
        assert "jupyternetes_reconcile_duration_seconds_count" in metrics
        assert "jupyternetes_instances 1.0" in metrics


async def _status_code(http: httpx.AsyncClient, path: str, code: int) -> bool:
    return (await http.get(path)).status_code == code


async def test_only_the_lease_holder_reconciles_and_a_successor_takes_over_a_crash(
    cluster, kube: Kube, namespace: str
):
    await put(kube, seed_template(namespace))
    timing = {
        "lease_duration_seconds": 3.0,
        "renew_deadline_seconds": 2.0,
        "retry_period_seconds": 0.5,
    }
    env = dict(os.environ, POD_NAME="replica-a", KUBECONFIG=str(cluster.kubeconfig))
    replica_a = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyternetes_ssa",
            "reconcile",
            "-n",
            namespace,
            "--leader-elect",
            "--lease-namespace",
            namespace,
            "--health-port",
            "0",
            "--lease-duration",
            "3",
            "--renew-deadline",
            "2",
            "--retry-period",
            "0.5",
        ],
        env=env,
    )
    try:
        await wait_for(
            lambda: _holder(kube, namespace, "replica-a"),
            timeout=30,
            message="replica-a holds the lease",
        )
        settings = settings_for(namespace, identity="replica-b", leader_elect=True, **timing)
        async with running(kube, settings) as replica_b:
            await put(kube, seed_instance(namespace, "erin"))
            await wait_for(
                lambda: _phase(kube, namespace, "erin", "Running"),
                timeout=30,
                message="erin converged by the leader",
            )
            assert not replica_b.leading

            replica_a.kill()  # a crash: the lease is not released
            killed_at = time.monotonic()
            await wait_for(lambda: replica_b.leading, timeout=30, message="replica-b takes over")
            took = time.monotonic() - killed_at

            assert took < timing["lease_duration_seconds"] + 3, took
            # created by one replica, taken over by the other: both wrote as our field manager
            lease = await kube.get(LEASE, namespace, "jupyternetes-ssa")
            writers = {m["manager"] for m in lease["metadata"]["managedFields"]}
            assert writers == {FIELD_MANAGER}, writers
            await put(kube, seed_instance(namespace, "frank"))
            await wait_for(
                lambda: _phase(kube, namespace, "frank", "Running"),
                timeout=30,
                message="frank converged by the new leader",
            )
    finally:
        replica_a.kill()
        replica_a.wait(timeout=10)


async def _holder(kube: Kube, ns: str, identity: str) -> bool:
    lease = await kube.get(LEASE, ns, "jupyternetes-ssa")
    return bool(lease) and lease["spec"].get("holderIdentity") == identity


async def test_informer_relists_after_410_gone_and_keeps_delivering(cluster, namespace: str):
    flaky = FlakyApi(cluster.api, [410], url_part="pods", watch_only=True)
    store: dict = {}
    seen: list[tuple[str, str]] = []
    informer = Informer(
        Kube(flaky),
        POD,
        (namespace,),
        store,
        lambda kind, obj, old: seen.append((kind, obj["metadata"]["name"])),
    )
    task = asyncio.create_task(informer.run())
    try:
        await wait_for(lambda: informer.relists >= 2, timeout=30, message="a re-list after the 410")
        assert flaky.injected == 1
        kube = Kube(cluster.api)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "watched", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
        }
        await put(kube, pod)
        await wait_for(
            lambda: (namespace, "watched") in store,
            timeout=30,
            message="the new pod reaches the cache through the resumed watch",
        )
        await kube.delete(POD, namespace, "watched", grace_seconds=0)
        await wait_for(
            lambda: (namespace, "watched") not in store,
            timeout=30,
            message="the deletion reaches the cache",
        )
        assert ("ADDED", "watched") in seen and ("DELETED", "watched") in seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_resync_repairs_status_written_by_someone_else(kube: Kube, namespace: str):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "hana"))
    async with running(kube, settings_for(namespace, resync_seconds=1.0)):
        await wait_for(
            lambda: _phase(kube, namespace, "hana", "Running"), timeout=30, message="hana Running"
        )
        tamper = {
            "apiVersion": INSTANCE.api_version,
            "kind": INSTANCE.kind,
            "metadata": {"name": "hana", "namespace": namespace},
            "status": {"phase": "Tampered"},
        }
        await kube.apply(tamper, subresource="status", field_manager="intruder", force=True)
        assert (await status_of(kube, namespace, "hana"))["phase"] == "Tampered"

        await wait_for(
            lambda: _phase(kube, namespace, "hana", "Running"),
            timeout=30,
            message="the periodic resync restores the status",
        )


async def test_scheduling_failures_reach_the_status_message(kube: Kube, namespace: str):
    template = seed_template(namespace)
    template["spec"]["pods"][0]["spec"]["nodeSelector"] = {"pool": "gpu-nodes-that-do-not-exist"}
    await put(kube, template)
    await put(kube, seed_instance(namespace, "ivan"))
    async with running(kube, settings_for(namespace)):

        async def explained() -> bool:
            message = condition(await status_of(kube, namespace, "ivan"), "Progressing").get(
                "message", ""
            )
            return "FailedScheduling" in message

        await wait_for(
            explained, timeout=60, message="the scheduler's FailedScheduling event in the status"
        )
        status = await status_of(kube, namespace, "ivan")
        assert status["phase"] == "Pending"
        assert status["pods"]["notebook"]["state"] == "Processed"
        assert "node" in status["pods"]["notebook"]["errorMessage"]


async def test_the_reconciler_survives_an_apiserver_crash_and_converges_after(
    cluster, kube: Kube, namespace: str
):
    if cluster.local is None:
        pytest.skip("restarting the apiserver needs the local backend (the default)")
    local = cluster.local
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "kate"))
    async with running(kube, settings_for(namespace)) as controller:
        await wait_for(
            lambda: _phase(kube, namespace, "kate", "Running"), timeout=30, message="kate Running"
        )
        relists = sum(i.relists for i in controller.informers)

        index, old = next(
            (i, p) for i, p in enumerate(local.processes) if p.name == "kube-apiserver"
        )
        os.kill(old.pid, signal.SIGKILL)  # a crash, not a clean shutdown
        procs.stop([old])
        local.processes[index] = procs.spawn(old.name, old.argv, local.state_dir, child_env())
        local.save()
        await wait_for(
            lambda: _answers(kube, namespace), timeout=60, message="the restarted apiserver answers"
        )

        await put(kube, seed_instance(namespace, "liam"))
        await wait_for(
            lambda: _phase(kube, namespace, "liam", "Running"),
            timeout=60,
            message="an instance created after the restart converges",
        )
        assert sum(i.relists for i in controller.informers) > relists
        assert controller.synced()


async def _answers(kube: Kube, ns: str) -> bool:
    return await kube.get(INSTANCE, ns, "kate") is not None


async def test_a_start_costs_one_status_write_and_ready_is_never_held_back(
    kube: Kube, namespace: str
):
    """Progress before Ready ("pending", a PVC bound, a pod scheduled, an address, the node's
    events) is held back for --status-interval; the verdicts are written at once."""
    await put(kube, seed_template(namespace))
    async with running(kube, settings_for(namespace, status_interval_seconds=3600)) as ctl:
        await wait_for(ctl.synced, timeout=30, message="caches synced")
        await put(kube, seed_instance(namespace, "paced"))
        await wait_for(
            lambda: _phase(kube, namespace, "paced", "Running"), timeout=60, message="Running"
        )
        status = await status_of(kube, namespace, "paced")
        assert status["pods"]["notebook"]["podAddress"], status  # carried by the Ready write
        assert condition(status, "Ready")["status"] == "True"
        assert ctl.metrics.status_writes._value.get() == 1  # Running (Pending was held back)


async def test_a_held_back_pending_status_is_written_once_its_interval_is_over(
    kube: Kube, namespace: str
):
    """A pod that never runs (no node matches) still gets its "pending" status, with the
    scheduler's reason, one --status-interval after the start: held back, never lost."""
    template = edited(
        seed_template(namespace),
        lambda t: t["spec"]["pods"][0]["spec"].update(nodeSelector={"no-such": "node"}),
    )
    await put(kube, template)
    async with running(kube, settings_for(namespace, status_interval_seconds=1.0)) as ctl:
        await wait_for(ctl.synced, timeout=30, message="caches synced")
        await put(kube, seed_instance(namespace, "stuck"))

        async def told() -> bool:
            status = await status_of(kube, namespace, "stuck")
            return status.get("phase") == "Pending" and "node" in str(status)

        await wait_for(told, timeout=60, message="the pending status with the scheduler's reason")
        assert condition(await status_of(kube, namespace, "stuck"), "Ready")["status"] == "False"
