"""Continuous mode: informers feed a work queue of instance keys; workers run `reconcile_instance`.

Watch handlers only map an event to the instance(s) it concerns: an instance's own spec change,
every instance using a changed template, the instance owning a changed pod, PVC or warning event.
A periodic resync re-queues everything and garbage-collects across the whole cache.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import defaultdict

from jupyternetes_ssa import events, labels
from jupyternetes_ssa.errors import BadSettings
from jupyternetes_ssa.health import Metrics, serve
from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import EVENT, INSTANCE, TEMPLATE, Kube, Resource
from jupyternetes_ssa.leader import LeaderElector, LostLeadership
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.observe import (
    POD_EVENTS,
    Key,
    Observed,
    identity,
    key_of,
    owned_resources,
    template_scope,
)
from jupyternetes_ssa.prune import Wanted, plan_prune, prune
from jupyternetes_ssa.queue import WorkQueue
from jupyternetes_ssa.reconcile import reconcile_instance
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)


def _spec_changed(new: Manifest, old: Manifest | None) -> bool:
    """An instance event worth a reconcile: not just our own status write."""
    if old is None:
        return True
    n, o = new["metadata"], old["metadata"]
    return any(
        n.get(f) != o.get(f)
        for f in ("generation", "labels", "annotations", "deletionTimestamp", "uid")
    )


def _instance_label(obj: Manifest) -> tuple[str, str]:
    meta = obj["metadata"]
    lbl = meta.get("labels") or {}
    return lbl.get(labels.INSTANCE_NAMESPACE, meta.get("namespace", "")), lbl.get(
        labels.INSTANCE, ""
    )


def _template_key(instance: Manifest) -> Key:
    ref = instance.get("spec", {}).get("template") or {}
    return ref.get("namespace") or instance["metadata"]["namespace"], ref.get("name", "")


class Controller:
    def __init__(self, kube: Kube, settings: Settings):
        self.kube, self.s = kube, settings
        self.observed = Observed()
        self.queue = WorkQueue(settings.backoff_base, settings.backoff_max)
        self.metrics = Metrics()
        self.wanted: Wanted = {}
        self.by_label: dict[tuple[str, str], Key] = {}
        # (namespace, instance label value) -> our objects carrying it: a reconcile's prune
        # looks at its own instance's objects, not at every object in the cache.
        self.members: dict[tuple[str, str], set[tuple[str, Key]]] = defaultdict(set)
        self.elector = LeaderElector(kube, settings) if settings.leader_elect else None
        self._event_cache: dict[Key, Manifest] = {}
        self.informers: list[Informer] = []  # built in run(), once the owned kinds are known
        self.metrics.queue_depth.set_function(lambda: len(self.queue))
        self.metrics.instances.set_function(lambda: len(self.observed.instances))
        self.metrics.leader.set_function(lambda: 1 if self.leading else 0)

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def _informers(self, owned: list[Resource]) -> list[Informer]:
        s, o, managed = self.s, self.observed, labels.MANAGED_SELECTOR
        kw = {"timeout_seconds": s.watch_timeout_seconds}
        o.owned = {res.kind_key: {} for res in owned}
        return [
            Informer(self.kube, INSTANCE, s.namespaces, o.instances, self._on_instance, **kw),
            Informer(self.kube, TEMPLATE, template_scope(s), o.templates, self._on_template, **kw),
            *(
                Informer(
                    self.kube,
                    res,
                    s.namespaces,
                    o.owned[res.kind_key],
                    self._on_owned,
                    label_selector=managed,
                    **kw,
                )
                for res in owned
            ),
            Informer(
                self.kube,
                EVENT,
                s.namespaces,
                self._event_cache,
                self._on_event,
                field_selector=POD_EVENTS,
                **kw,
            ),
        ]

    def synced(self) -> bool:
        return bool(self.informers) and all(i.synced for i in self.informers)

    # --- event handlers: map an event to instance keys --------------------------------------
    def _on_instance(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        key = key_of(obj)
        label_key = (key[0], safe_label_value(key[1]))
        if kind == "DELETED":
            self.by_label.pop(label_key, None)
        else:
            self.by_label[label_key] = key
        if kind == "DELETED" or _spec_changed(obj, old):
            self.queue.add(key)

    def _on_template(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        if old is not None and kind != "DELETED" and obj.get("spec") == old.get("spec"):
            return
        tkey = key_of(obj)
        for key, instance in self.observed.instances.items():
            if _template_key(instance) == tkey:
                self.queue.add(key)

    def _owner_of(self, obj: Manifest) -> Key | None:
        meta = obj["metadata"]
        lbl = meta.get("labels") or {}
        return self.by_label.get(
            (
                lbl.get(labels.INSTANCE_NAMESPACE, meta.get("namespace", "")),
                lbl.get(labels.INSTANCE, ""),
            )
        )

    def _on_owned(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        members = self.members[_instance_label(obj)]
        if kind == "DELETED":
            members.discard(identity(obj))
        else:
            members.add(identity(obj))
        if (owner := self._owner_of(obj)) is not None:
            self.queue.add(owner)

    def _on_event(self, kind: str, event: Manifest, old: Manifest | None) -> None:
        if kind == "DELETED":
            self.observed.remove_event(event)
            return
        self.observed.add_event(event)
        involved = event.get("involvedObject", {})
        pod = self.observed.pods.get((involved.get("namespace", ""), involved.get("name", "")))
        if pod is not None and (owner := self._owner_of(pod)) is not None:
            self.queue.add(owner)

    # --- work --------------------------------------------------------------------------------
    def _objects_of(self, key: Key) -> list[Manifest]:
        stores = self.observed.owned
        ids = self.members.get((key[0], safe_label_value(key[1])), set())
        return [obj for kind, k in ids if (obj := stores.get(kind, {}).get(k)) is not None]

    async def _prune(self, only: Key | None = None) -> None:
        self.observed.complete = self.synced()
        objects = None if only is None else self._objects_of(only)
        candidates = plan_prune(self.observed, self.wanted, objects)
        pruned = await prune(self.kube, candidates, dry_run=self.s.dry_run)
        for cand in pruned:
            log.info("pruned %s: %s", cand.ref, cand.reason)
            self.metrics.pruned.labels(cand.ref.kind).inc()
        if not self.s.dry_run:
            await events.record_pruned(self.kube, pruned, self.observed.instances)

    async def _process(self, key: Key) -> bool:
        """Reconcile one key; True when it failed (retry with backoff)."""
        instance = self.observed.instances.get(key)
        if instance is None:
            self.wanted.pop(key, None)
            await self._prune(only=key)
            return False
        started = time.monotonic()
        result, want = await reconcile_instance(self.kube, self.observed, instance, self.s)
        self.metrics.duration.observe(time.monotonic() - started)
        self.wanted[key] = want
        for outcome in result.outcomes:
            self.metrics.applies.labels(outcome.action).inc()
        if result.status_written:
            self.metrics.status_writes.inc()
        self.metrics.reconciles.labels("error" if result.error else "ok").inc()
        if result.error:
            self.metrics.errors.labels(result.reason or "Error").inc()
        if want is not None:
            await self._prune(only=key)
        return bool(result.error)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                failed = await self._process(key)
            except Exception:
                log.exception("reconciling %s/%s failed", *key)
                failed = True
            self.queue.done(key, failed=failed)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.s.resync_seconds)
            for key in list(self.observed.instances):
                self.queue.add(key)
            if self.synced():
                await self._prune()

    async def _wait_synced(self) -> None:
        while not self.synced():
            await asyncio.sleep(0.1)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set (exit 0) or leadership is lost (exit 1)."""
        self.informers = self._informers(await owned_resources(self.kube, self.s))
        tasks = [asyncio.create_task(i.run()) for i in self.informers]
        server = None
        if self.s.health_port:
            server = await serve(self.s.health_host, self.s.health_port, self.synced, self.metrics)
        code = 0
        try:
            code = await self._lead(stop, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.elector:
                await self.elector.release()
            if server:
                server.close()
        return code

    async def _lead(self, stop: asyncio.Event, tasks: list[asyncio.Task]) -> int:
        stopping = asyncio.create_task(stop.wait())
        tasks.append(stopping)
        if self.elector:
            acquiring = asyncio.create_task(self.elector.acquire())
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                acquiring.cancel()
                return 0
            tasks.append(asyncio.create_task(self.elector.hold()))
        await self._wait_synced()
        log.info("caches synced: %d instances; reconciling", len(self.observed.instances))
        tasks += [asyncio.create_task(self._worker()) for _ in range(self.s.concurrency)]
        tasks.append(asyncio.create_task(self._resync()))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopping and isinstance(task.exception(), LostLeadership):
                log.error("%s; exiting so that another replica takes over", task.exception())
                return 1
        return 0


async def run_controller(kubeconfig: str | None, context: str | None, settings: Settings) -> int:
    kube = await Kube.connect(kubeconfig=kubeconfig, context=context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Controller(kube, settings).run(stop)
    except BadSettings as err:
        log.error("%s", err)
        return 2
