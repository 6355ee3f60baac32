"""Continuous mode never fails quietly and never writes without the lease: a dead task ends the
process with its cause, a failing watch shows in /healthz, a 403 is logged and the rest goes on,
and a leader frozen past its renew deadline writes nothing once it wakes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys

import httpx
import pytest
from faults import FlakyApi
from reconcile_helpers import edited, once, put, seed_instance, seed_template, status_of
from test_controller import running, settings_for

from jupyternetes_ssa import controller as controller_module
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.kube import INSTANCE, LEASE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for

pytestmark = pytest.mark.integration


class BuggyController(Controller):
    """FAULT INJECTION: a template handler with a bug (nothing real raises on demand)."""

    def _on_template(self, kind, obj, old):
        raise RuntimeError("a bug in a watch handler")


async def test_a_dead_background_task_ends_the_process_with_its_cause(
    kube: Kube, namespace: str, caplog
):
    await put(kube, seed_template(namespace))
    caplog.set_level(logging.ERROR)
    controller = BuggyController(kube, settings_for(namespace))

    code = await asyncio.wait_for(controller.run(asyncio.Event()), timeout=60)

    assert code == 1
    text = caplog.text
    assert "informer JupyterNotebookTemplate failed; exiting" in text
    assert "a bug in a watch handler" in text


async def test_healthz_fails_while_a_watch_keeps_failing_and_recovers(
    cluster, namespace: str, monkeypatch
):
    monkeypatch.setattr(controller_module, "UNHEALTHY_AFTER_SECONDS", 1.0)
    flaky = FlakyApi(cluster.api, [503] * 10_000, url_part="jupyternotebooktemplates")
    settings = settings_for(namespace)
    base = f"http://127.0.0.1:{settings.health_port}"
    async with running(Kube(flaky), settings), httpx.AsyncClient(base_url=base) as http:
        await wait_for(lambda: _code(http, "/healthz", 503), timeout=60, message="unhealthy")
        assert (await http.get("/readyz")).status_code == 503
        flaky.statuses.clear()
        await wait_for(lambda: _code(http, "/healthz", 200), timeout=90, message="healthy again")


async def test_a_forbidden_delete_is_logged_and_the_rest_keeps_converging(
    kube: Kube, namespace: str, sa_kubeconfig, caplog
):
    """The reconciler's identity may not delete pods: garbage collection fails with a 403 that
    is logged with its cause, and other instances still converge."""
    rules = [
        {"apiGroups": ["kadense.io"], "resources": ["*"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "events"], "verbs": ["*"]},
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch", "create", "patch", "update"],
        },
    ]
    narrow = await Kube.connect(kubeconfig=str(await sa_kubeconfig(rules)))
    template = seed_template(namespace)
    template["spec"]["pods"][0]["ownedByInstance"] = False  # so that we, not Kubernetes, delete
    await put(kube, template)
    await put(kube, seed_instance(namespace, "gone"))
    assert (await once(kube, namespace)).ok
    caplog.set_level(logging.INFO)

    async with running(narrow, settings_for(namespace, backoff_base=0.2)) as controller:
        await wait_for(controller.synced, timeout=60, message="caches synced")
        await kube.delete(INSTANCE, namespace, "gone")
        await wait_for(
            lambda: "403" in caplog.text and "gone-notebook" in caplog.text,
            timeout=60,
            message="the 403 logged",
        )
        await put(kube, seed_instance(namespace, "alive"))
        await wait_for(
            lambda: _phase(kube, namespace, "alive", "Running"),
            timeout=60,
            message="another instance still converges",
        )
    assert await kube.get(POD, namespace, "gone-notebook") is not None


async def test_a_lagging_instance_watch_never_makes_live_objects_orphans(
    kube: Kube, namespace: str
):
    """FAULT INJECTION of a lagging watch: the controller's instance cache misses an instance
    whose objects it does see; garbage collection asks the apiserver before deleting."""
    template = seed_template(namespace)
    template["spec"]["pods"][0]["ownedByInstance"] = False
    template["spec"]["pvcs"][0]["deletionPolicy"] = "Delete"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "fresh"))
    assert (await once(kube, namespace)).ok
    async with running(kube, settings_for(namespace)) as controller:
        await wait_for(controller.synced, timeout=60, message="caches synced")
        await wait_for(
            lambda: _phase(kube, namespace, "fresh", "Running"), timeout=60, message="running"
        )
        # The watch has not caught up: the instance is missing and the watch's position is
        # from before the objects were written.
        controller.observed.instances.pop((namespace, "fresh"))
        controller.informers[0]._seen.clear()

        await controller._prune()

    assert await kube.get(POD, namespace, "fresh-notebook") is not None
    assert await kube.get(PVC, namespace, "fresh-workspace") is not None


async def test_a_frozen_leader_writes_nothing_once_it_wakes(
    cluster, kube: Kube, namespace: str, tmp_path
):
    """Two replicas; the leader is frozen (SIGSTOP) past the lease, the standby takes over and
    works, then the old leader resumes with stale caches and queued work: it must not send one
    write, and must exit so that it restarts as a standby."""
    template = seed_template(namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "erin"))
    timing = ["--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5"]
    log_path = tmp_path / "replica-a.log"
    env = dict(os.environ, POD_NAME="replica-a", KUBECONFIG=str(cluster.kubeconfig))
    with log_path.open("wb") as log_file:
        argv = [sys.executable, "-m", "jupyternetes_ssa", "reconcile", "-n", namespace]
        argv += ["--leader-elect", "--lease-namespace", namespace, "--health-port", "0"]
        replica_a = subprocess.Popen(
            [*argv, "--log-level", "debug", *timing], env=env, stderr=log_file
        )
    try:
        await wait_for(lambda: _holder(kube, namespace, "replica-a"), timeout=60, message="A leads")
        await wait_for(
            lambda: _phase(kube, namespace, "erin", "Running"), timeout=60, message="A converges"
        )
        settings = settings_for(
            namespace,
            identity="replica-b",
            leader_elect=True,
            lease_duration_seconds=4.0,
            renew_deadline_seconds=3.0,
            retry_period_seconds=0.5,
        )
        async with running(kube, settings) as replica_b:
            os.kill(replica_a.pid, signal.SIGSTOP)
            await wait_for(lambda: replica_b.leading, timeout=60, message="B takes over")
            # Work A has not seen: a new instance, and a template change for every pod.
            await put(kube, seed_instance(namespace, "late"))
            await put(kube, edited(template, _annotate))
            await wait_for(
                lambda: _phase(kube, namespace, "late", "Running"), timeout=60, message="B works"
            )
            before = log_path.read_text()
            assert "write: " in before  # A's writes are visible in its log while it led

            os.kill(replica_a.pid, signal.SIGCONT)
            code = await asyncio.to_thread(replica_a.wait, 60)

            after = log_path.read_text()[len(before) :]
            assert code == 1, after
            assert "write: " not in after, after
            assert "exiting so that another replica takes over" in after
            assert replica_b.leading
            assert await _holder(kube, namespace, "replica-b")
    finally:
        if replica_a.poll() is None:
            os.kill(replica_a.pid, signal.SIGCONT)
            replica_a.kill()
            replica_a.wait(timeout=10)


def _annotate(template: dict) -> None:
    template["spec"]["pods"][0]["annotations"] = {"edited": "while A slept"}


async def _holder(kube: Kube, ns: str, identity: str) -> bool:
    lease = await kube.get(LEASE, ns, "jupyternetes-ssa")
    return bool(lease) and lease["spec"].get("holderIdentity") == identity


async def _phase(kube: Kube, ns: str, name: str, phase: str) -> bool:
    return (await status_of(kube, ns, name)).get("phase") == phase


async def _code(http: httpx.AsyncClient, path: str, code: int) -> bool:
    return (await http.get(path)).status_code == code
