"""What the cluster holds, as the reconciler sees it: one `Observed` per pass.

Once mode fills it from complete lists (a handful of requests, whatever the number of objects);
continuous mode keeps the same structure current from watches. Nothing here GETs one object.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.diff import holds
from jupyternetes_ssa.errors import BadSettings
from jupyternetes_ssa.kube import (
    EVENT,
    INSTANCE,
    NAMESPACE,
    POD,
    PVC,
    TEMPLATE,
    ApiError,
    Kube,
    Resource,
    UnknownKind,
    kind_key,
)
from jupyternetes_ssa.managed import applied_by, fold, packed, shared_copy
from jupyternetes_ssa.ownership import Owner
from jupyternetes_ssa.relabel import sweep
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.tenancy import uses_selector
from jupyternetes_ssa.tokens import Sealing
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
# Every event about a pod: warnings explain a stuck pod, normal ones (Scheduled, Pulling, Started)
# tell the hub's progress page how far a start is.
POD_EVENTS = "involvedObject.kind=Pod"


EVENT_FIELDS = ("type", "reason", "message", "involvedObject", "lastTimestamp", "eventTime")
EVENT_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")


def cached(obj: Manifest, applied: Manifest | None = None) -> Manifest:
    """An object as the caches keep it: at 5,000 servers memory is the limit, so an Event keeps
    what status.py reads (a tenth of it), everything else its managedFields packed.
    `applied`: the whole object we just created, whose fields are then ours (see _ours_only)."""
    if obj.get("kind") == EVENT.kind and obj.get("apiVersion") == EVENT.api_version:
        meta = obj["metadata"]
        return {
            "apiVersion": EVENT.api_version,
            "kind": EVENT.kind,
            "metadata": {k: meta[k] for k in EVENT_METADATA if k in meta},
            **{k: obj[k] for k in EVENT_FIELDS if k in obj},
        }
    if obj.get("kind") == POD.kind and obj.get("apiVersion") == POD.api_version:
        obj["status"] = _pod_status(obj.get("status") or {})
    if obj.get("kind") == INSTANCE.kind and obj.get("apiVersion") == INSTANCE.api_version:
        obj.get("metadata", {}).pop("managedFields", None)  # nothing reads who wrote an instance
        return shared_copy(obj)
    return _ours_only(obj, applied)


def _ours_only(obj: Manifest, applied: Manifest | None = None) -> Manifest:
    """One of our objects keeps, beside its metadata and status, only the fields we applied:
    drift, updateStrategy and the dry-run comparisons read nothing else (diff.py, strategy.py),
    and the server's defaults (a pod's tolerations, its token volume, ...) are a third of it.
    Kept whole when our apply set no more than metadata (an adopted pod waiting for a restart)."""
    labels_ = obj.get("metadata", {}).get("labels") or {}
    if labels_.get(labels.MANAGED_BY) != labels.MANAGED_BY_VALUE:
        return shared_copy(packed(obj))
    body = _body(applied) if applied and holds(_body(applied), obj) else {}
    # What we just created and the server kept as sent is ours as sent (the rendered body,
    # shared: neither is changed afterwards; its fixed strings are the template's own);
    # picking it out of managedFields cost as much as the create's request.
    body = body or _body(applied_by(obj, FIELD_MANAGER))
    if not body:
        return shared_copy(packed(obj))
    if obj.get("kind") == PVC.kind:
        _keep_claim_size(body, obj)
    packed(fold(obj, FIELD_MANAGER, list(body)))
    return shared_copy({k: obj[k] for k in TOP_LEVEL if k in obj}) | body


TOP_LEVEL = ("apiVersion", "kind", "metadata", "status")


def claim_size(obj: Manifest) -> Any:
    return ((obj.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")


def _keep_claim_size(body: Manifest, live: Manifest) -> None:
    """A claim's requested size stays in the cache even when an admin's resize took the field
    from us: apply.py keeps a grown claim's size (Kubernetes never shrinks one)."""
    size = claim_size(live)
    if size is not None and claim_size(body) is None:
        spec = body.setdefault("spec", {})
        resources = spec.setdefault("resources", {})
        resources.setdefault("requests", {})["storage"] = size


def _body(obj: Manifest) -> Manifest:
    return {k: v for k, v in obj.items() if k not in TOP_LEVEL}


def _pod_status(status: Manifest) -> Manifest:
    """What status.py reads of a pod's status: its phase, why, its address, whether it is Ready
    and why its containers wait or ended (not the images, ids, times and IPs lists)."""
    slim = {k: status[k] for k in ("phase", "reason", "message", "podIP") if k in status}
    conditions = [
        {"type": c.get("type"), "status": c.get("status")} for c in status.get("conditions") or []
    ]
    if conditions:
        slim["conditions"] = conditions
    for key in ("initContainerStatuses", "containerStatuses"):
        if status.get(key):
            slim[key] = [
                {"name": c.get("name"), "state": c.get("state") or {}} for c in status[key]
            ]
    return slim


def key_of(obj: Manifest) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def identity(obj: Manifest) -> tuple[str, Key]:
    """(Kind.group, (namespace, name)): one object, whatever version it was read at."""
    return kind_key(obj.get("apiVersion", ""), obj.get("kind", "")), key_of(obj)


@dataclass
class Observed:
    """Objects by (namespace, name); what we own also by kind (`Kind.group`, see kind_key).

    `complete` is False unless every list succeeded.
    """

    instances: dict[Key, Manifest] = field(default_factory=dict)
    templates: dict[Key, Manifest] = field(default_factory=dict)
    owned: dict[str, dict[Key, Manifest]] = field(
        default_factory=lambda: {POD.kind_key: {}, PVC.kind_key: {}}
    )
    events: dict[Key, list[Manifest]] = field(default_factory=lambda: defaultdict(list))
    complete: bool = False
    # Read only while some template grants by namespace selector (tenancy.py).
    namespaces: dict[Key, Manifest] = field(default_factory=dict)
    namespaces_known: bool = False
    sealing: Sealing = field(default_factory=Sealing)  # keys and token Secrets (tokens.py)
    # Changes the apiserver refused in place (apply.py), by object: (its resourceVersion, our
    # manifest's hash) -> the outcome, so the same refusal is not asked for again every pass.
    refused: dict[tuple[str, Key], tuple[tuple[str, str], Any]] = field(default_factory=dict)
    # Continuous mode: whether the watch of an object's kind has delivered past its version.
    watched_past: Callable[[Manifest], bool] | None = None
    # A continuous shard that selects by bucket: this instance label's objects it cannot see.
    strays_of: Callable[[str], Awaitable[list[Manifest]]] | None = None

    @property
    def pods(self) -> dict[Key, Manifest]:
        return self.owned[POD.kind_key]

    @property
    def pvcs(self) -> dict[Key, Manifest]:
        return self.owned[PVC.kind_key]

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels; None when they were not (or could not be) read."""
        namespace = self.namespaces.get(("", name)) if self.namespaces_known else None
        return None if namespace is None else namespace["metadata"].get("labels") or {}

    def store_for(self, obj: Manifest) -> dict[Key, Manifest] | None:
        if obj.get("kind") == INSTANCE.kind:
            return self.instances
        return self.owned.get(kind_key(obj.get("apiVersion", ""), obj.get("kind", "")))

    def _cache_for(self, obj: Manifest) -> dict[Key, Manifest] | None:
        """store_for, plus the token Secrets we wrote (never listed; not a kind we may create)."""
        store = self.store_for(obj)
        if store is None and obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1":
            return self.sealing.secrets
        return store

    def remember(self, obj: Manifest, applied: Manifest | None = None) -> None:
        """Keep an object we just wrote, unless the cache already holds a newer version.

        Saves a redundant apply or status write when the next reconcile of the same instance
        runs before the watch has delivered our own change.
        """
        store = self._cache_for(obj)
        if store is None:
            return
        key = key_of(obj)
        held = store.get(key)
        if held is None and self.watched_past is not None and self.watched_past(obj):
            return  # the watch showed it, then its going: deleted, or out of our selection
        if held is None or _newer(obj, held):
            store[key] = cached(obj, applied)

    def forget(self, obj: Manifest) -> None:
        store = self._cache_for(obj)
        if store is not None:
            store.pop(key_of(obj), None)

    def alive(self, owner: Owner) -> bool:
        """Whether the instance an owner record names still exists (same name, same uid)."""
        instance = self.instances.get(owner.key)
        return instance is not None and instance["metadata"].get("uid") == owner.uid

    def live(self, manifest: Manifest) -> Manifest | None:
        """The live object for a manifest we would apply (None if absent or not watched)."""
        return (self._cache_for(manifest) or {}).get(key_of(manifest))

    def warnings_for(self, pod: Manifest) -> list[Manifest]:
        """Warning events about this pod (this incarnation: matched by uid), newest last."""
        return [e for e in self.events_for(pod) if e.get("type") == "Warning"]

    def events_for(self, pod: Manifest) -> list[Manifest]:
        """Every event about this pod (this incarnation: matched by uid), newest last."""
        uid = pod["metadata"].get("uid")
        found = [
            e
            for e in self.events.get(key_of(pod), [])
            if e.get("involvedObject", {}).get("uid") in (None, uid)
        ]
        return sorted(found, key=event_time)

    def add_event(self, event: Manifest) -> None:
        involved = event.get("involvedObject", {})
        bucket = self.events[(involved.get("namespace", ""), involved.get("name", ""))]
        bucket[:] = [e for e in bucket if e["metadata"]["uid"] != event["metadata"]["uid"]]
        bucket.append(event)
        del bucket[:-20]  # the newest few are all a status message needs

    def remove_event(self, event: Manifest) -> None:
        involved = event.get("involvedObject", {})
        bucket = self.events.get((involved.get("namespace", ""), involved.get("name", "")), [])
        bucket[:] = [e for e in bucket if e["metadata"]["uid"] != event["metadata"]["uid"]]


def _newer(a: Manifest, b: Manifest) -> bool:
    ra, rb = a["metadata"].get("resourceVersion", ""), b["metadata"].get("resourceVersion", "")
    return ra.isdigit() and rb.isdigit() and int(ra) > int(rb)


def event_time(event: Manifest) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event["metadata"].get("creationTimestamp")
        or ""
    )


def template_scope(settings: Settings) -> tuple[str, ...]:
    """Namespaces to read templates from (catalogues included); () means cluster-wide."""
    scope = settings.template_namespaces or settings.namespaces
    return tuple(dict.fromkeys(scope + settings.catalog_namespaces)) if scope else ()


_lists_running = 0


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while lists decode. Decoding 15,000 objects
    allocates over a million dicts, and each full collection walked every one of them (and
    all cached before): a quarter of a start's CPU at 5,000 servers. Cached objects are plain
    JSON data, freed by reference counting. When the last list ends, one full collection walks
    everything once and frees the cycles made meanwhile; the collector then counts the batch as
    long-lived and walks it again only after that grows by a quarter. Without it, the first
    full collections came while new servers started (pauses of 300 ms). Freezing the batch
    instead would also have pinned every cycle alive at that moment, for ever. Lists run at
    start and after a watch is lost, not at every re-watch."""
    global _lists_running
    if _lists_running == 0:
        gc.disable()
    _lists_running += 1
    try:
        yield
    finally:
        _lists_running -= 1
        if _lists_running == 0:
            gc.collect()
            gc.enable()


async def _list_all(
    kube: Kube, res: Resource, scope: tuple[str, ...], **selectors: str
) -> list[Manifest]:
    """Every object of a kind in the scope, as the caches keep them (`cached`)."""
    with collector_paused():
        if not scope:
            return (await kube.list(res, None, **selectors, each=cached)).items
        lists = await asyncio.gather(
            *(kube.list(res, ns, **selectors, each=cached) for ns in scope)
        )
    return [item for lst in lists for item in lst.items]


async def owned_resources(kube: Kube, settings: Settings) -> list[Resource]:
    """Pods, PVCs and the kinds the admin allows for otherResources (namespaced only)."""
    extra = []
    for spec in settings.allow_kinds:
        try:
            res = await kube.find_kind(spec)
        except UnknownKind as err:
            raise BadSettings(
                err.message,
                subject=f"--allow-kind {spec}",
                fix="name a kind the apiserver serves, as Kind or Kind.group",
            ) from err
        if not res.namespaced:
            raise BadSettings(
                f"{res.kind} is cluster-scoped",
                subject=f"--allow-kind {spec}",
                fix="only namespaced kinds can belong to one notebook server",
            )
        extra.append(res)
    return [PVC, POD, *extra]


async def owned_selector(kube: Kube, settings: Settings, resources: list[Resource]) -> str:
    """The label selector a continuous shard lists and watches our objects with: its buckets
    too (Shard.selector). Objects of ours without a bucket label (made before buckets) are
    first relabelled if they are this shard's (relabel.py); if that cannot be done, every
    object of ours is listed this run (never wrong, only slower). Once mode lists all of ours
    (`observe`): a pass sees every object, so a bucket label edited by hand hides nothing."""
    buckets = settings.shard.selector
    if buckets is None:
        return labels.MANAGED_SELECTOR
    probes = [
        kube.any(res, ns, label_selector=labels.UNBUCKETED_SELECTOR)
        for res in resources
        for ns in settings.namespaces or (None,)
    ]
    try:
        if any(await asyncio.gather(*probes)):
            await sweep(kube, settings, resources)
    except ApiError as err:
        log.warning("listing all of our objects this run: shard bucket labels unchecked: %s", err)
        return labels.MANAGED_SELECTOR
    return f"{labels.MANAGED_SELECTOR},{buckets}"


async def observe(kube: Kube, settings: Settings, resources: list[Resource]) -> Observed:
    """List everything one pass needs; raises if any list fails (never a partial picture).

    Our objects are listed before the instances: an object in the picture was created before
    its instance was listed, so a brand-new instance's objects are never taken for orphans.
    """
    scope = settings.namespaces
    managed = {"label_selector": labels.MANAGED_SELECTOR}
    owned = await asyncio.gather(*(_list_all(kube, res, scope, **managed) for res in resources))
    instances, templates, events = await asyncio.gather(
        _list_all(kube, INSTANCE, scope),
        _list_all(kube, TEMPLATE, template_scope(settings)),
        _list_all(kube, EVENT, scope, field_selector=POD_EVENTS),
    )
    shard = settings.shard  # a shard keeps its own instances, objects and their pods' events
    seen = Observed(
        instances={key_of(o): o for o in instances if shard.owns_instance(o)},
        templates={key_of(o): o for o in templates},
        owned={
            res.kind_key: {key_of(o): o for o in objs if shard.owns_object(o)}
            for res, objs in zip(resources, owned, strict=True)
        },
    )
    for event in events:
        involved = event.get("involvedObject", {})
        if not shard.sharded or (involved.get("namespace"), involved.get("name")) in seen.pods:
            seen.add_event(event)
    if any(uses_selector(t) for t in templates):
        await _observe_namespaces(kube, seen)
    seen.complete = True
    return seen


async def _observe_namespaces(kube: Kube, seen: Observed) -> None:
    """Namespace labels for selector grants; unreadable ones refuse only those grants."""
    try:
        if not await kube.allowed("list", NAMESPACE):  # asked: a 403 costs kr8s its session
            log.warning("no list on namespaces: instanceNamespaceSelector grants are refused")
            return
        listed = await kube.list(NAMESPACE)
    except ApiError as err:
        log.warning("cannot read namespaces for instanceNamespaceSelector grants: %s", err)
        return
    seen.namespaces = {key_of(o): o for o in listed.items}
    seen.namespaces_known = True
