"""Garbage-collect what no instance wants any more, safely.

Candidates come only from a complete picture (`Observed.complete`), carry our managed-by label and
our field manager, and belong to an instance that is gone or whose (successfully rendered) template
no longer lists the item; an instance whose desired set is unknown (template missing, render error)
protects everything it has. Each delete is guarded by uid and resourceVersion preconditions, so an
object that changed since the list is left for the next pass. PVCs are deleted only when their
recorded policy says Delete: user data is kept by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace

from jupyternetes_ssa import labels
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, ApiError, Kube
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.observe import Key, Observed, identity
from jupyternetes_ssa.ownership import adopted, disowned, managed_by_us, owner_of
from jupyternetes_ssa.types import Manifest, ObjectRef, PruneCandidate

Wanted = dict[Key, set[tuple[str, Key]] | None]  # instance -> objects it wants; None: unknown


class _ByLabel:
    """Instances by (namespace, label value), built only if an object without a record needs it
    (a scan of every instance per reconcile would be quadratic at start-up)."""

    def __init__(self, observed: Observed):
        self.observed, self.index = observed, None

    def get(self, key: tuple[str, str]) -> Key | None:
        if self.index is None:
            names = self.observed.instances
            self.index = {(ns, safe_label_value(name)): (ns, name) for ns, name in names}
        return self.index.get(key)


def _item_label(obj: Manifest) -> str:
    lbl = obj["metadata"].get("labels") or {}
    return next((lbl[k] for k in labels.ITEM_LABEL.values() if k in lbl), "?")


def owner_key(obj: Manifest, by_label: _ByLabel) -> Key | None:
    """The (namespace, name) of the instance the object belongs to: its owner record, or for
    objects made before records existed, its instance labels; None if no such instance exists."""
    recorded = owner_of(obj)
    if recorded is not None:
        return recorded.key
    if disowned(obj):  # a record that disagrees: its labels do not tell whose it is either
        return None
    return by_label.get(labels.instance_of(obj))


def _named_owner(obj: Manifest) -> Key:
    """The instance an object names: its record, else its labels (older objects)."""
    recorded = owner_of(obj)
    if recorded is not None:
        return recorded.key
    return labels.instance_of(obj)


def _why(obj: Manifest, observed: Observed, by_label: _ByLabel, wanted: Wanted) -> str | None:
    """Why `obj` should go, or None when it should stay (or we cannot be sure)."""
    if disowned(obj):
        return None
    key = owner_key(obj, by_label)
    if key is None or key not in observed.instances:
        if _owned_by_an_instance(obj):
            return None  # Kubernetes' garbage collector deletes it: racing it costs requests
        recorded = owner_of(obj)
        name = (
            recorded.name
            if recorded
            else obj["metadata"].get("labels", {}).get(labels.INSTANCE, "?")
        )
        return f"its instance {name} no longer exists"
    want = wanted.get(key)
    if want is None or identity(obj) in want:
        return None
    item = _item_label(obj)
    return f"instance {key[1]} no longer lists item {item} (or its condition is false)"


def _owned_by_an_instance(obj: Manifest) -> bool:
    return any(o.get("kind") == INSTANCE.kind for o in obj["metadata"].get("ownerReferences") or [])


def deletable(obj: Manifest) -> bool:
    """Never what was adopted; pods always; others by their recorded deletionPolicy, PVCs kept
    without one (user data)."""
    if adopted(obj):
        return False
    if obj["kind"] == POD.kind and obj["apiVersion"] == "v1":
        return True
    default = "Retain" if obj["kind"] == PVC.kind and obj["apiVersion"] == "v1" else "Delete"
    annotations = obj["metadata"].get("annotations") or {}
    return annotations.get(labels.DELETION_POLICY, default) == "Delete"


def _candidate(obj: Manifest, reason: str, allowed: bool) -> PruneCandidate:
    meta = obj["metadata"]
    ref = ObjectRef(obj["kind"], meta["namespace"], meta["name"])
    labels_now = frozenset((meta.get("labels") or {}).items())
    return PruneCandidate(
        ref, meta["uid"], meta["resourceVersion"], reason, allowed, obj["apiVersion"], labels_now
    )


def _ours_alive(observed: Observed):
    for objects in observed.owned.values():
        for obj in objects.values():
            if managed_by_us(obj) and not obj["metadata"].get("deletionTimestamp"):
                yield obj


def plan_prune(
    observed: Observed, wanted: Wanted, objects: Iterable[Manifest] | None = None
) -> list[PruneCandidate]:
    """What to delete (allowed) or report as kept (deletionPolicy Retain), among `objects`
    (default: every object of ours in the picture)."""
    if not observed.complete:
        return []
    by_label = _ByLabel(observed)
    found = []
    alive = (
        _ours_alive(observed)
        if objects is None
        else (o for o in objects if managed_by_us(o) and not o["metadata"].get("deletionTimestamp"))
    )
    for obj in alive:
        reason = _why(obj, observed, by_label, wanted)
        if reason is not None:
            candidate = _candidate(obj, reason, deletable(obj))
            key = owner_key(obj, by_label)
            if key is None or key not in observed.instances:
                candidate = replace(candidate, orphan_of=_named_owner(obj))
            found.append(candidate)
    return found


async def _delete(kube: Kube, cand: PruneCandidate, dry_run: bool) -> bool:
    """Delete if it is still the object we decided on; a changed one is looked at once more."""
    res = await kube.resource(cand.api_version, cand.ref.kind)
    ns, name = cand.ref.namespace, cand.ref.name
    try:
        return await kube.delete(
            res, ns, name, uid=cand.uid, resource_version=cand.resource_version, dry_run=dry_run
        )
    except ApiError as err:
        if err.status != 409:
            raise
    # It changed since the list (a PVC being bound, a status update): delete it only if it is
    # still ours, still labelled as when we decided, and not already going.
    live = await kube.get(res, ns, name)
    meta = (live or {}).get("metadata", {})
    if (
        live is None
        or meta.get("uid") != cand.uid
        or meta.get("deletionTimestamp")
        or not managed_by_us(live)
        or frozenset((meta.get("labels") or {}).items()) != cand.labels
    ):
        return False
    try:
        return await kube.delete(
            res, ns, name, uid=cand.uid, resource_version=meta["resourceVersion"], dry_run=dry_run
        )
    except ApiError as err:
        if err.status == 409:  # changed again: the next pass decides
            return False
        raise


async def prune(
    kube: Kube, candidates: list[PruneCandidate], *, dry_run: bool = False, concurrency: int = 20
) -> list[PruneCandidate]:
    """Delete the allowed candidates, `concurrency` at a time (`--gc-concurrency`, 20 like
    Kubernetes' own garbage collector's workers: thousands of orphans after a mass deletion go
    about as fast as a plain delete loop); returns those deleted (or that would be, with
    dry_run). The first error is raised once every delete has been tried."""
    gate = asyncio.Semaphore(concurrency)

    async def one(cand: PruneCandidate) -> bool:
        async with gate:
            return await _delete(kube, cand, dry_run)

    allowed = [cand for cand in candidates if cand.allowed]
    done = await asyncio.gather(*(one(cand) for cand in allowed), return_exceptions=True)
    if failed := next((r for r in done if isinstance(r, BaseException)), None):
        raise failed
    return [cand for cand, deleted in zip(allowed, done, strict=True) if deleted is True]


def _of_instance(observed: Observed, namespace: str, name: str):
    """The instance's objects: ours (a hand-made one with its record is not, and a purge
    neither deletes nor waits for it)."""
    by_label = _ByLabel(observed)
    for objects in observed.owned.values():
        for (ns, _), obj in objects.items():
            if ns == namespace and managed_by_us(obj) and owner_key(obj, by_label) == (ns, name):
                yield obj


def plan_purge(observed: Observed, namespace: str, name: str) -> list[PruneCandidate]:
    """Everything of ours recorded for this instance, PVCs included (spec.purge asked for it);
    adopted objects are reported as kept, never deleted."""
    reason = "its instance asked for its data to be deleted (spec.purge)"
    return [
        _candidate(
            obj, reason if not adopted(obj) else f"{reason}; kept: adopted", not adopted(obj)
        )
        for obj in _of_instance(observed, namespace, name)
        if managed_by_us(obj) and not obj["metadata"].get("deletionTimestamp")
    ]


def remaining(observed: Observed, namespace: str, name: str) -> int:
    """How many of the instance's objects still exist (terminating ones included; adopted
    ones, which a purge keeps, not)."""
    return sum(1 for obj in _of_instance(observed, namespace, name) if not adopted(obj))
