"""adv9: hostile review of the status hold (controller._pace_status / _release_held): a
progress-only status falling due while others wait in the queue is held once, and released
when the queue runs dry. Promises: never lost, verdicts never held, no endless re-queue loop,
deleted instances do not leak in the held set.

The ordering of a burst is made deterministic with a gate on the apiserver (FAULT INJECTION: a
slow apiserver on demand; every request still goes to the real one): with one worker, an
instance whose requests wait at a closed gate keeps the worker busy while the test arranges
what waits in the queue behind it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from dataclasses import replace

import pytest
from reconcile_helpers import TEST_MANAGER, edited, put, seed_instance, seed_template, status_of

from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.kube import INSTANCE, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.settings import Settings

pytestmark = pytest.mark.integration
FINALIZER = "adv9.example.com/hold"


class GatedApi:
    """FAULT INJECTION, not a mock: requests (not watches) whose URL holds a closed gate's
    text wait until it opens, then go to the real kr8s Api and apiserver."""

    def __init__(self, api):
        self.api, self.gates = api, {}

    def gate(self, part: str) -> asyncio.Event:
        return self.gates.setdefault(part, asyncio.Event())

    @contextlib.asynccontextmanager
    async def call_api(self, method: str = "GET", **kwargs):
        watch = (kwargs.get("params") or {}).get("watch") == "true"
        url = str(kwargs.get("url", ""))
        for part, opened in list(self.gates.items()):
            if not watch and part in url:
                await opened.wait()
        async with self.api.call_api(method, **kwargs) as response:
            yield response


class Watchdog(threading.Thread):
    """A thread watching the controller's reconcile counter: if passes run by the thousand
    (a loop that never yields freezes the event loop, so the test itself cannot look), it
    breaks the loop by emptying the held set and says so."""

    def __init__(self, ctl: Controller, limit: int = 2000):
        super().__init__(daemon=True)
        self.ctl, self.limit, self.fired, self.done = ctl, limit, False, threading.Event()
        self.start_count = self.count()

    def count(self) -> float:
        return sum(
            s.value
            for m in self.ctl.metrics.reconciles.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )

    def run(self) -> None:
        while not self.done.wait(0.2):
            if self.count() - self.start_count > self.limit:
                self.fired = True
                self.ctl._status_held.clear()  # break the spin so the test can report it


def _settings(namespace: str) -> Settings:
    base = Settings(namespaces=(namespace,), resync_seconds=3600, lease_namespace=namespace)
    return replace(base, concurrency=1, status_interval_seconds=3600.0, key_namespace=namespace)


@contextlib.asynccontextmanager
async def _running(kube: Kube, settings: Settings):
    ctl = Controller(kube, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    try:
        await wait_for(ctl.synced, timeout=60, message="caches synced")
        yield ctl
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


def _idle(ctl: Controller) -> bool:
    return len(ctl.queue) == 0 and not ctl.queue._active


@pytest.mark.parametrize("turn", ["gone", "deleted", "purged"])
async def test_a_held_instance_that_is_deleted_or_purged_does_not_spin(cluster, namespace, turn):
    """k's progress is held behind m (one worker; l and m wait at gates), then k is deleted
    outright ("gone": held), deleted while a finalizer keeps it ("deleted": as the spawner's
    Foreground stop does until its pods are gone) or purged; then the queue runs dry. Found:
    the last two loop without yielding, so the informers cannot even deliver the deletion
    that would end it: the controller is frozen for good (its /healthz too)."""
    kube_real = cluster.kube
    gated = GatedApi(cluster.api)
    kube = Kube(gated)
    template = edited(
        seed_template(namespace),  # a pod that never runs: its status stays progress
        lambda t: t["spec"]["pods"][0]["spec"].update(nodeSelector={"no-such": "node"}),
    )
    await put(kube_real, template)
    k = seed_instance(namespace, "k")
    if turn != "gone":
        k["metadata"]["finalizers"] = [FINALIZER]  # a deletion leaves it deleting: a slow stop
    await put(kube_real, k)
    K, L, M = (namespace, "k"), (namespace, "gate-l"), (namespace, "gate-m")
    async with _running(kube, _settings(namespace)) as ctl:
        await wait_for(lambda: K in ctl._status_clock, timeout=60, message="k's first pass")
        gate_l, gate_m = gated.gate("gate-l-"), gated.gate("gate-m-")
        await put(kube_real, seed_instance(namespace, "gate-l"))
        await wait_for(lambda: L in ctl.queue._active, timeout=60, message="l at its gate")
        # FAULT INJECTION (time): k's interval is over, without waiting an hour
        ctl._status_clock[K] -= 7200
        ctl.queue.add(K)
        await put(kube_real, seed_instance(namespace, "gate-m"))
        await wait_for(lambda: M in ctl.queue._queued, timeout=60, message="m queued after k")
        gate_l.set()  # k's progress falls due while m waits: held
        await wait_for(lambda: K in ctl._status_held, timeout=60, message="k held")
        await wait_for(lambda: M in ctl.queue._active, timeout=60, message="m at its gate")
        if turn in ("gone", "deleted"):
            await kube_real.delete(INSTANCE, namespace, "k")
        else:
            purge = copy.deepcopy(k)
            purge["spec"]["purge"] = True
            await put(kube_real, purge)
        await wait_for(lambda: K in ctl.queue._queued, timeout=60, message=f"k {turn}: queued")
        dog = Watchdog(ctl)
        dog.start()
        try:
            gate_m.set()
            await wait_for(
                lambda: _idle(ctl) or dog.fired, timeout=120, message="the queue runs dry"
            )
        finally:
            dog.done.set()
            dog.join()
        passes = dog.count() - dog.start_count
        assert not dog.fired, f"{passes:.0f} passes while idle: an endless re-queue loop"
        assert K not in ctl._status_held or turn == "purged"  # no leak once it is gone
    if turn != "gone":
        without = copy.deepcopy(k)
        without["metadata"].pop("finalizers")
        await kube_real.apply(without, field_manager=TEST_MANAGER)  # let the namespace go


async def test_a_held_status_becomes_a_verdict_at_once_when_the_pod_fails(cluster, namespace):
    """Held: k's pending status is held behind m; then k's instance turns its start into a
    render error (a verdict). Its next pass, while n still waits in the queue, writes the
    error at once: a verdict is never held, even for a held instance."""
    kube_real = cluster.kube
    gated = GatedApi(cluster.api)
    kube = Kube(gated)
    template = edited(
        seed_template(namespace),
        lambda t: t["spec"]["pods"][0]["spec"].update(nodeSelector={"no-such": "node"}),
    )
    await put(kube_real, template)
    await put(kube_real, seed_instance(namespace, "k"))
    K, L, M = (namespace, "k"), (namespace, "gate-l"), (namespace, "gate-m")
    async with _running(kube, _settings(namespace)) as ctl:
        await wait_for(lambda: K in ctl._status_clock, timeout=60, message="k's first pass")
        gate_l, gate_m = gated.gate("gate-l-"), gated.gate("gate-m-")
        await put(kube_real, seed_instance(namespace, "gate-l"))
        await wait_for(lambda: L in ctl.queue._active, timeout=60, message="l at its gate")
        ctl._status_clock[K] -= 7200  # FAULT INJECTION (time): k's interval is over
        ctl.queue.add(K)
        await put(kube_real, seed_instance(namespace, "gate-m"))
        await wait_for(lambda: M in ctl.queue._queued, timeout=60, message="m queued after k")
        gate_l.set()
        await wait_for(lambda: K in ctl._status_held, timeout=60, message="k held")
        await wait_for(lambda: M in ctl.queue._active, timeout=60, message="m at its gate")
        gate_n = gated.gate("gate-n-")
        broken = seed_instance(namespace, "k", **{"jupyterhub.api_token_secret": "stolen"})
        await put(kube_real, broken)  # a reserved variable: a render error, a verdict
        await wait_for(lambda: K in ctl.queue._queued, timeout=60, message="k queued again")
        await put(kube_real, seed_instance(namespace, "gate-n"))
        N = (namespace, "gate-n")
        await wait_for(lambda: N in ctl.queue._queued, timeout=60, message="n queued after k")
        gate_m.set()  # k's pass comes while n still waits: the queue is busy

        async def degraded() -> bool:
            status = await status_of(kube_real, namespace, "k")
            return "reserved" in str(status.get("conditions"))

        await wait_for(degraded, timeout=60, message="the verdict written while n still waits")
        assert N in ctl.queue._active  # the queue was still busy: the verdict was not held
        assert K not in ctl._status_held
        gate_n.set()


async def test_a_burst_under_constant_churn_loses_no_status_and_settles(cluster, namespace):
    """Held: twelve starts that never run (progress only), a tiny --status-interval, two
    workers, and a churn of other keys that keeps the queue from running dry (the release
    never comes): every instance still gets its pending status (held once, then written one
    interval later), and once the churn stops the controller goes idle with nothing held and
    no pass count running away."""
    kube = cluster.kube
    template = edited(
        seed_template(namespace),
        lambda t: t["spec"]["pods"][0]["spec"].update(nodeSelector={"no-such": "node"}),
    )
    await put(kube, template)
    names = [f"b{i}" for i in range(12)]
    settings = replace(_settings(namespace), concurrency=2, status_interval_seconds=0.2)
    async with _running(Kube(cluster.api), settings) as ctl:
        dog = Watchdog(ctl, limit=5000)
        dog.start()
        churning, seen_held = True, set()

        async def churn() -> None:  # load, not synchronisation: keys of no instance
            n = 0
            while churning:
                seen_held.update(ctl._status_held)
                for _ in range(5):
                    n += 1
                    ctl.queue.add((namespace, f"ghost-{n}"))
                await asyncio.sleep(0.01)

        churner = asyncio.create_task(churn())
        try:
            for name in names:
                await put(kube, seed_instance(namespace, name))

            async def all_pending() -> bool:
                for name in names:
                    if (await status_of(kube, namespace, name)).get("phase") != "Pending":
                        return False
                return True

            await wait_for(all_pending, timeout=120, message="every pending status, churn on")
            churning = False
            await churner
            await wait_for(
                lambda: _idle(ctl) and not ctl._status_held, timeout=120, message="settled"
            )
        finally:
            churning = False
            dog.done.set()
            dog.join()
        assert not dog.fired, "an endless re-queue loop"
        assert seen_held, "the burst never held a status: the test did not test the hold"
