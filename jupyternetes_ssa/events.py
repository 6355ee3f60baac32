"""Kubernetes Events on instances: what the reconciler did, for `kubectl describe jni`.

`notes` (pure) picks what a pass's result is worth telling: changes applied to existing objects
or re-created, changes waiting for a re-create, conflicts and rejected objects, render and
template errors, objects pruned. A server's first objects are told by the instance's status
alone (its conditions and `pods`/`pvcs` maps): an Event per created object would be a third of
the requests of a start (BENCHMARKS.md). `record` writes them, best effort: an Event is never
worth failing a reconcile.
An Event's name is derived from the instance's uid, reason and message, so the same story told
again (a problem that comes back) moves one Event's `lastTimestamp` instead of piling up
objects (a merge patch: no `get` right on events is needed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.kube import EVENT, INSTANCE, ApiError, Kube
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.types import InstanceResult, Manifest, PruneCandidate

log = logging.getLogger(__name__)
COMPONENT = "jupyternetes-ssa"
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Note:
    type: str  # Normal | Warning
    reason: str
    message: str


def notes(result: InstanceResult, status_changed: bool) -> list[Note]:
    """The Events one reconcile of an instance deserves. What repeats every pass while nothing
    changes (a pending update, an error) is told only when the status changed with it."""
    found: list[Note] = []
    for o in result.outcomes:
        what = f"{o.item.section}[{o.item.item}] {o.item.manifest['kind']} {o.item.name}"
        if o.action == "configured":
            found.append(Note("Normal", "Applied", f"{what} {o.action}"))
        elif o.action == "recreating":
            found.append(Note("Normal", "Recreating", f"{what}: deleted to apply {_fields(o)}"))
        elif o.action == "pending" and status_changed:
            found.append(Note("Normal", "UpdatePending", f"{what}: {_fields(o)} need a re-create"))
        elif o.action == "failed" and status_changed:
            reason = "Conflict" if "conflict" in o.message.lower() else "ApplyFailed"
            found.append(Note("Warning", reason, f"{what}: {o.message}"))
    if result.error and status_changed and not any(n.type == "Warning" for n in found):
        found.append(Note("Warning", result.reason or "Error", result.error))
    return found


def _fields(outcome) -> str:
    return ", ".join(outcome.fields) or "spec"


def pruned_notes(
    pruned: list[PruneCandidate], instances: dict[tuple[str, str], Manifest]
) -> list[tuple[Manifest, Note]]:
    """Pruned objects of instances that still exist (a removed item, a condition turned false).
    Looks at the pruned objects' namespaces only: every reconcile ends in a prune, mostly of
    nothing, and labelling all instances for it made a burst's cost grow with N."""
    if not pruned:
        return []
    spaces = {cand.ref.namespace for cand in pruned}
    by_label = {
        (ns, safe_label_value(name)): inst for (ns, name), inst in instances.items() if ns in spaces
    }
    found = []
    for cand in pruned:
        value = dict(cand.labels).get(labels.INSTANCE)
        instance = by_label.get((cand.ref.namespace, value or ""))
        if instance is not None:
            found.append((instance, Note("Normal", "Pruned", f"{cand.ref}: {cand.reason}")))
    return found


def event_body(instance: Manifest, note: Note, now: str) -> Manifest:
    meta = instance["metadata"]
    key = f"{meta.get('uid', '')}\0{note.reason}\0{note.message}".encode()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{hashlib.sha256(key).hexdigest()[:16]}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": INSTANCE.api_version,
            "kind": INSTANCE.kind,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": note.type,
        "reason": note.reason,
        "message": note.message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def record(kube: Kube, instance: Manifest, found: list[Note]) -> None:
    """Write the Events (a repeated one: its time moved); never raises."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for note in found:
        body = event_body(instance, note, now)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await _create_or_bump(kube, ns, name, body, now)
        except (ApiError, OSError) as err:
            log.info("event %s on %s/%s not recorded: %s", note.reason, ns, name, err)


async def _create_or_bump(kube: Kube, ns: str, name: str, body: Manifest, now: str) -> None:
    try:
        await kube.create(body)
        return
    except ApiError as err:
        if err.status != 409:
            raise
    patch = {"lastTimestamp": now}
    await kube.request(
        "PATCH",
        EVENT,
        ns,
        EVENT.url(name),
        content=json.dumps(patch),
        params={"fieldManager": FIELD_MANAGER},
        headers={"Content-Type": "application/merge-patch+json"},
    )


async def record_pruned(
    kube: Kube, pruned: list[PruneCandidate], instances: dict[tuple[str, str], Manifest]
) -> None:
    for instance, note in pruned_notes(pruned, instances):
        await record(kube, instance, [note])
