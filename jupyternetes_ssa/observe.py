"""What the cluster holds, as the reconciler sees it: one `Observed` per pass.

Once mode fills it from complete lists (a handful of requests, whatever the number of objects);
continuous mode keeps the same structure current from watches. Nothing here GETs one object.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from jupyternetes_ssa import labels
from jupyternetes_ssa.kube import EVENT, INSTANCE, POD, PVC, TEMPLATE, Kube, Resource
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.types import Manifest

Key = tuple[str, str]  # (namespace, name)
WARNING_EVENTS = "type=Warning,involvedObject.kind=Pod"


def key_of(obj: Manifest) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


@dataclass
class Observed:
    """Objects by (namespace, name). `complete` is False unless every list succeeded."""

    instances: dict[Key, Manifest] = field(default_factory=dict)
    templates: dict[Key, Manifest] = field(default_factory=dict)
    pods: dict[Key, Manifest] = field(default_factory=dict)
    pvcs: dict[Key, Manifest] = field(default_factory=dict)
    events: dict[Key, list[Manifest]] = field(default_factory=lambda: defaultdict(list))
    complete: bool = False

    def remember(self, obj: Manifest) -> None:
        """Keep an object we just wrote, unless the cache already holds a newer version.

        Saves a redundant apply or status write when the next reconcile of the same instance
        runs before the watch has delivered our own change.
        """
        store = {
            "Pod": self.pods,
            "PersistentVolumeClaim": self.pvcs,
            "JupyterNotebookInstance": self.instances,
        }.get(obj.get("kind", ""))
        if store is None:
            return
        key = key_of(obj)
        cached = store.get(key)
        if cached is None or _newer(obj, cached):
            store[key] = obj

    def live(self, section: str, key: Key) -> Manifest | None:
        return (self.pods if section == "pods" else self.pvcs).get(key)

    def warnings_for(self, pod: Manifest) -> list[Manifest]:
        """Warning events about this pod (this incarnation: matched by uid), newest last."""
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
    """Namespaces to read templates from; () means cluster-wide."""
    return settings.template_namespaces or settings.namespaces


async def _list_all(
    kube: Kube, res: Resource, scope: tuple[str, ...], **selectors: str
) -> list[Manifest]:
    if not scope:
        return (await kube.list(res, None, **selectors)).items
    lists = await asyncio.gather(*(kube.list(res, ns, **selectors) for ns in scope))
    return [item for lst in lists for item in lst.items]


async def observe(kube: Kube, settings: Settings) -> Observed:
    """List everything one pass needs; raises if any list fails (never a partial picture)."""
    scope = settings.namespaces
    managed = {"label_selector": labels.MANAGED_SELECTOR}
    instances, templates, pods, pvcs, events = await asyncio.gather(
        _list_all(kube, INSTANCE, scope),
        _list_all(kube, TEMPLATE, template_scope(settings)),
        _list_all(kube, POD, scope, **managed),
        _list_all(kube, PVC, scope, **managed),
        _list_all(kube, EVENT, scope, field_selector=WARNING_EVENTS),
    )
    seen = Observed(
        instances={key_of(o): o for o in instances},
        templates={key_of(o): o for o in templates},
        pods={key_of(o): o for o in pods},
        pvcs={key_of(o): o for o in pvcs},
    )
    for event in events:
        seen.add_event(event)
    seen.complete = True
    return seen
