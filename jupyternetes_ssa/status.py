"""An instance's status from what the pass saw and did: pure functions, no I/O.

Keeps the original Jupyternetes' fields (`pods`/`pvcs` maps, `podsProvisioned`, ...), adds the
standard `Ready`/`Progressing`/`Degraded` conditions, and folds a pod's waiting reasons and latest
warning events into the messages, so the hub never has to read pods or events itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyternetes_ssa.observe import Observed
from jupyternetes_ssa.ownership import adopted
from jupyternetes_ssa.types import SECTIONS, ItemOutcome, Manifest

OURS = (
    "otherResources",
    "otherResourcesProvisioned",
    "observedGeneration",
    "phase",
    "podsProvisioned",
    "pvcsProvisioned",
    "pods",
    "pvcs",
    "conditions",
)
MAX_MESSAGE = 1000
WAITS_FOR_RESTART = "changes wait for the pod's next start (updateStrategy OnRestart)"


@dataclass(frozen=True)
class ItemView:
    """One item as status sees it: its object (if any) and what this pass did to it."""

    section: str
    item: str
    resource_name: str
    live: Manifest | None
    action: str = "unchanged"
    message: str = ""
    fields: tuple[str, ...] = ()


def views_from_outcomes(outcomes: list[ItemOutcome]) -> list[ItemView]:
    """A waiting pod is shown under the name it runs as (a renamed item keeps its old pod)."""
    return [
        ItemView(o.item.section, o.item.item, _shown_name(o), o.live, o.action, o.message, o.fields)
        for o in outcomes
    ]


def _shown_name(outcome: ItemOutcome) -> str:
    if outcome.action == "waiting" and outcome.live:
        return outcome.live["metadata"]["name"]
    return outcome.item.name


def _ready(pod: Manifest) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_state(pod: Manifest | None) -> str:
    if pod is None:
        return "Missing"
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    phase = pod.get("status", {}).get("phase", "Pending")
    if phase in ("Failed", "Succeeded"):
        return phase
    return "Running" if phase == "Running" and _ready(pod) else "Processed"


def _waiting_reasons(pod: Manifest) -> list[str]:
    st = pod.get("status", {})
    found = [f"{st.get('reason', '')}: {st['message']}".lstrip(": ")] if st.get("message") else []
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        for kind in ("waiting", "terminated"):
            detail = (cs.get("state") or {}).get(kind)
            if detail and detail.get("reason") not in (
                None,
                "Completed",
                "PodInitializing",
                "ContainerCreating",
            ):
                text = f"container {cs.get('name')} {detail['reason']}"
                found.append(f"{text}: {detail['message']}" if detail.get("message") else text)
    return found


def pod_problems(pod: Manifest | None, observed: Observed, limit: int = 3) -> str:
    """Why a pod is not running yet: its waiting reasons, then its newest warning events since
    its last normal step (a FailedScheduling followed by Scheduled is over)."""
    if pod is None or pod_state(pod) == "Running":
        return ""
    history = observed.events_for(pod)
    steps = [i for i, e in enumerate(history) if e.get("type") != "Warning"]
    since = history[steps[-1] + 1 :] if steps else history
    events = [
        f"{e.get('reason', '')}: {e.get('message', '').strip()}"
        for e in [e for e in since if e.get("type") == "Warning"][-limit:]
    ]
    return "; ".join(_waiting_reasons(pod) + events)[:MAX_MESSAGE]


def last_event(pod: Manifest | None, observed: Observed) -> str:
    """While a pod starts, its newest normal event (Scheduled, Pulling, Started...): how far it
    got. (Warnings already are in `errorMessage`.)"""
    if pod is None or pod_state(pod) == "Running":
        return ""
    events = [e for e in observed.events_for(pod) if e.get("type") != "Warning"]
    if not events:
        return ""
    return f"{events[-1].get('reason', '')}: {events[-1].get('message', '').strip()}"[:MAX_MESSAGE]


def notebook_port(pod: Manifest) -> int | None:
    """The notebook container's port: the container named `notebook`, else the first one."""
    containers = pod.get("spec", {}).get("containers") or []
    chosen = next((c for c in containers if c.get("name") == "notebook"), None)
    chosen = chosen or (containers[0] if containers else {})
    ports = chosen.get("ports") or []
    return ports[0].get("containerPort") if ports else None


def item_status(view: ItemView, observed: Observed) -> dict[str, Any]:
    entry: dict[str, Any] = {"resourceName": view.resource_name}
    params: dict[str, str] = {}
    if view.section == "pods":
        entry["state"] = pod_state(view.live)
        problem = pod_problems(view.live, observed)
        if event := last_event(view.live, observed):
            params["lastEvent"] = event
        if view.live:
            if view.live.get("status", {}).get("podIP"):
                entry["podAddress"] = view.live["status"]["podIP"]
            if (port := notebook_port(view.live)) is not None:
                entry["portNumber"] = port
    else:
        entry["state"] = "Processed" if view.live else "Missing"
        problem = ""
        if view.live and view.section == "pvcs":
            params["phase"] = view.live.get("status", {}).get("phase", "Pending")
    if view.action == "failed":  # an object that exists keeps its state: it may still serve
        entry["state"] = entry["state"] if view.live else "Error"
        problem = view.message
    if view.live and adopted(view.live):
        params["adopted"] = "true"  # taken over by request: never deleted by the reconciler
    if view.action in ("pending", "recreating", "waiting"):
        params["updatePending"] = ", ".join(view.fields)
    if problem:
        entry["errorMessage"] = problem[:MAX_MESSAGE]
    if params:
        entry["parameters"] = params
    return entry


def provisioned(entries: dict[str, dict]) -> str:
    exist = [e for e in entries.values() if e["state"] not in ("Missing", "Error")]
    if len(exist) == len(entries):
        return "Completed"
    return "Partially Processed" if exist else "Pending"


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "observedGeneration": generation,
    }


def _progress(views: list[ItemView], pods: dict[str, dict]) -> tuple[bool, str, str]:
    """(progressing?, reason, message) from what this pass did and how the pods are doing."""
    pending = [v for v in views if v.action in ("pending", "recreating", "waiting")]
    if pending:
        reason = _update_reason({v.action for v in pending})
        detail = "; ".join(
            f"{v.section}[{v.item}]: {', '.join(v.fields) or 'spec'}" for v in pending
        )
        if reason == "UpdatePendingRestart":
            return True, reason, f"{WAITS_FOR_RESTART}: {detail}"
        if reason == "Recreating":
            return True, reason, f"changes waiting for a re-create: {detail}"
        if all(v.section == "pods" for v in pending):
            hint = (
                " (Kubernetes forbids these changes in place: set updateStrategy: Recreate on the"
                " template item or run with --recreate-pods to re-create the pod)"
            )
            return True, reason, f"changes waiting for a re-create: {detail}{hint}"
        hint = (  # PVCs and other objects are never deleted to apply a change
            " (Kubernetes forbids these changes in place, and the reconciler never re-creates a"
            " PVC or other object for them: change the template back, or replace the object by"
            " hand)"
        )
        return True, reason, f"changes Kubernetes refuses in place: {detail}{hint}"
    starting = {k: e for k, e in pods.items() if e["state"] in ("Processed", "Missing")}
    if starting:
        detail = "; ".join(f"pod {k}: {_starting_detail(e)}" for k, e in starting.items())
        return True, "PodsStarting", detail
    # An in-place update that was applied leaves nothing in progress: reporting it would cost
    # two status writes per instance for every template change.
    return False, "Converged", "every object matches the template"


def _update_reason(actions: set[str]) -> str:
    """Re-creating is under way; else a change Kubernetes refused; else one waiting by choice."""
    if "recreating" in actions:
        return "Recreating"
    return "UpdatePending" if "pending" in actions else "UpdatePendingRestart"


def _starting_detail(entry: dict) -> str:
    return entry.get("errorMessage") or entry.get("parameters", {}).get("lastEvent") or "starting"


def _degraded(error: str, reason: str, views: list[ItemView], items: dict[str, dict]):
    if error:
        return True, reason or "Error", error
    rejected = {f"{v.section}[{v.item}]": v.message for v in views if v.action == "failed"}
    broken = {
        k: f"{e['state']} {e.get('errorMessage', '')}".strip()
        for k, e in items.items()
        if e["state"] in ("Error", "Failed", "Succeeded")
    }
    problems = {**broken, **rejected}
    if problems:
        return True, "ItemFailed", "; ".join(f"{k}: {text}" for k, text in problems.items())
    return False, "AsExpected", ""


def phase_of(error: str, pods: dict[str, dict], ready: bool) -> str:
    states = {e["state"] for e in pods.values()}
    if error:
        return "Error"
    if states & {"Failed", "Succeeded"}:
        return "Failed"
    if ready:
        return "Running"
    return "Terminating" if "Terminating" in states else "Pending"


def _keep_transition_times(conditions: list[dict], previous: list[dict], now: str) -> None:
    before = {c.get("type"): c for c in previous or []}
    for cond in conditions:
        old = before.get(cond["type"])
        same = old and old.get("status") == cond["status"] and old.get("lastTransitionTime")
        cond["lastTransitionTime"] = old["lastTransitionTime"] if same else now


def instance_status(
    instance: Manifest,
    views: list[ItemView],
    observed: Observed,
    *,
    now: str,
    error: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """The whole status we own for `instance` (compare with `our_status(live)` before writing)."""
    generation = instance["metadata"].get("generation", 0)
    sections = {
        s: {v.item: item_status(v, observed) for v in views if v.section == s} for s in SECTIONS
    }
    pods = sections["pods"]
    items = {f"{s}[{k}]": e for s, entries in sections.items() for k, e in entries.items()}
    ready = bool(pods) and all(e["state"] == "Running" for e in pods.values())
    degraded = _degraded(error, reason, views, items)
    progressing = _progress(views, pods) if not degraded[0] else (False, degraded[1], "")
    conditions = [
        _condition(
            "Ready",
            ready,
            "PodsReady" if ready else "NotReady",
            "every pod is running and ready" if ready else progressing[2] or degraded[2],
            generation,
        ),
        _condition("Progressing", *progressing, generation),
        _condition("Degraded", *degraded, generation),
    ]
    _keep_transition_times(conditions, instance.get("status", {}).get("conditions"), now)
    return {
        "observedGeneration": generation,
        "phase": phase_of(error, pods, ready),
        **{f"{s}Provisioned": provisioned(entries) for s, entries in sections.items()},
        **sections,
        "conditions": conditions,
    }


def our_status(status: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a live status that we write, for an is-it-different check."""
    status = status or {}
    return {k: status[k] for k in OURS if k in status}


def _verdicts(status: dict[str, Any]) -> tuple:
    """What a reader waits on: the phase, each condition's verdict (not its wording) and each
    object's state. Messages, a pod's latest event and its address alone are progress."""
    conditions = {
        c.get("type"): (c.get("status"), c.get("reason")) for c in status.get("conditions") or []
    }
    states = {
        (section, item): entry.get("state")
        for section in SECTIONS
        for item, entry in (status.get(section) or {}).items()
    }
    return status.get("phase"), status.get("observedGeneration"), conditions, states


def urgent(instance: Manifest, desired: dict[str, Any]) -> bool:
    """Whether a status change must be written at once (a verdict changed), or is progress
    that continuous mode may coalesce with the next one (controller.py). A first status that
    only says "pending" is progress too: the hub waits for Ready or an error, both urgent."""
    live = our_status(instance.get("status"))
    if not live and desired.get("phase") == "Pending":
        return _condition_status(desired, "Degraded") == "True"
    return _verdicts(live) != _verdicts(desired)


def _condition_status(status: dict[str, Any], type_: str) -> str | None:
    found = (c for c in status.get("conditions") or [] if c.get("type") == type_)
    return next((c.get("status") for c in found), None)


def needs_write(instance: Manifest, desired: dict[str, Any]) -> bool:
    live = our_status(instance.get("status"))
    return live != {k: v for k, v in desired.items() if v not in ({}, None) or k in live}


def purge_status(instance: Manifest, left: int, *, now: str, error: str = "") -> dict[str, Any]:
    """Status of an instance whose data is being deleted (spec.purge)."""
    generation = instance["metadata"].get("generation", 0)
    done = left == 0 and not error
    message = error or ("every pod and PVC is gone" if done else f"{left} object(s) still exist")
    conditions = [
        _condition("Ready", False, "Purged" if done else "Purging", message, generation),
        _condition("Progressing", not done, "Purged" if done else "Purging", message, generation),
        _condition(
            "Degraded", bool(error), "PurgeFailed" if error else "AsExpected", error, generation
        ),
    ]
    _keep_transition_times(conditions, instance.get("status", {}).get("conditions"), now)
    return {
        "observedGeneration": generation,
        "phase": "Purged" if done else "Purging",
        "podsProvisioned": "Pending",
        "pvcsProvisioned": "Pending",
        "pods": {},
        "pvcs": {},
        "conditions": conditions,
    }
