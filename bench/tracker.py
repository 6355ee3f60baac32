"""Watch one namespace (pods, PVCs, instances) and note when things first appear.

Latencies are read off watch events as they arrive, not off polling, so they do not depend on a
poll interval; the wait conditions below are cheap checks on these in-memory caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from jupyternetes_ssa import labels
from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for

Manifest = dict[str, Any]


def pod_address(instance: Manifest) -> str | None:
    """The first pod address the instance's status reports (what the hub connects to)."""
    pods = ((instance.get("status") or {}).get("pods")) or {}
    for entry in pods.values():
        if isinstance(entry, dict) and entry.get("podAddress"):
            return entry["podAddress"]
    return None


def condition(instance: Manifest, type_: str) -> str:
    """The status ("True"/"False"/"") of one of the instance's conditions."""
    for cond in (instance.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond.get("status", "")
    return ""


def converged(instance: Manifest) -> bool:
    """Ready, and no longer Progressing: the reconciler has nothing left to say about it."""
    return condition(instance, "Ready") == "True" and condition(instance, "Progressing") == "False"


def running(pod: Manifest) -> bool:
    return (
        not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase") == "Running"
        and bool(pod.get("status", {}).get("podIP"))
    )


def instance_of(obj: Manifest) -> str:
    return (obj["metadata"].get("labels") or {}).get(labels.INSTANCE, "")


class Tracker:
    """``async with Tracker(kube, ns) as t:`` -- caches synced on entry, watches stopped on exit."""

    def __init__(self, kube: Kube, namespace: str, sync_timeout: float = 300.0):
        self.namespace = namespace
        self.sync_timeout = sync_timeout
        self.pods: dict[Any, Manifest] = {}
        self.pvcs: dict[Any, Manifest] = {}
        self.instances: dict[Any, Manifest] = {}
        self.pod_seen: dict[str, float] = {}  # instance name -> monotonic time its pod appeared
        self.running_seen: dict[str, float] = {}  # ... its pod first ran with an IP
        self.address_seen: dict[str, float] = {}  # instance name -> ... its podAddress appeared
        scope = (namespace,)
        self.informers = [
            Informer(kube, POD, scope, self.pods, self._on_pod),
            Informer(kube, PVC, scope, self.pvcs, lambda *_: None),
            Informer(kube, INSTANCE, scope, self.instances, self._on_instance),
        ]
        self._tasks: list[asyncio.Task] = []

    def _on_pod(self, kind: str, pod: Manifest, old: Manifest | None) -> None:
        if kind != "DELETED" and (owner := instance_of(pod)):
            now = time.monotonic()
            self.pod_seen.setdefault(owner, now)
            if running(pod):
                self.running_seen.setdefault(owner, now)

    def _on_instance(self, kind: str, inst: Manifest, old: Manifest | None) -> None:
        if kind != "DELETED" and pod_address(inst):
            self.address_seen.setdefault(inst["metadata"]["name"], time.monotonic())

    async def __aenter__(self) -> Tracker:
        self._tasks = [asyncio.create_task(i.run()) for i in self.informers]
        await wait_for(
            lambda: all(i.synced for i in self.informers),
            timeout=self.sync_timeout,
            message=f"watches of namespace {self.namespace}",
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- conditions ---------------------------------------------------------------------------
    def converged(self, names: Iterable[str]) -> bool:
        """Every one of these instances exists and is converged."""
        found = [self.instances.get((self.namespace, name)) for name in names]
        return all(i is not None and converged(i) for i in found)

    def with_status(self, names: Iterable[str]) -> int:
        """How many of these instances report their pods in their status."""
        found = [self.instances.get((self.namespace, name)) for name in names]
        return sum(1 for i in found if i is not None and (i.get("status") or {}).get("pods"))

    def pods_of(self, instances: set[str]) -> int:
        return sum(1 for p in self.pods.values() if instance_of(p) in instances)

    def undeleted_pods_of(self, instances: set[str]) -> int:
        """Pods of these instances that nobody has deleted yet (no deletionTimestamp): a delete
        answered is a delete done, for us as for the delete loop (which times its answers)."""
        return sum(
            1
            for p in self.pods.values()
            if instance_of(p) in instances and not p["metadata"].get("deletionTimestamp")
        )

    def pvcs_of(self, instances: set[str]) -> int:
        return sum(1 for c in self.pvcs.values() if instance_of(c) in instances)
