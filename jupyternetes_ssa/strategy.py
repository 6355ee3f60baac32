"""A pod item's `updateStrategy`: what a template change may do to a pod that already exists.

kubespawner never touches a running server, and that is what JupyterHub admins expect: by
default (`OnRestart`) a change to an existing pod's spec waits for the pod's next start (the next
time it is created); its metadata (labels, annotations, ownerReferences) restarts nothing and is
applied at once. `InPlace` applies the whole change if Kubernetes allows it (a new image restarts
that container) and reports it pending otherwise; `Recreate` deletes the pod to apply any spec
change. Pure functions: apply.py does what `decide` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Literal, get_args

from jupyternetes_ssa import labels
from jupyternetes_ssa.diff import changes
from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.types import Manifest, Section, UpdateStrategy

STRATEGIES: tuple[str, ...] = get_args(UpdateStrategy)
METADATA = ("labels", "annotations", "ownerReferences")  # what may change on a live pod
Decision = Literal["apply", "metadata", "wait", "recreate"]


def item_strategy(section: Section, item: Mapping[str, Any], path: str) -> UpdateStrategy:
    """The item's updateStrategy; `recreateOnChange: true` is the older spelling of Recreate."""
    strategy = item.get("updateStrategy")
    legacy = item.get("recreateOnChange", False) is True
    if strategy is None:
        return "Recreate" if legacy and section == "pods" else "OnRestart"
    where = f"{path}.updateStrategy"
    if section != "pods":
        raise RenderError(
            "updateStrategy is for pods only",
            path=where,
            fix="remove it: PVCs and other objects are always updated in place",
        )
    if strategy not in STRATEGIES:
        raise RenderError(
            f"unknown updateStrategy {strategy!r}", path=where, fix=f"use one of {STRATEGIES}"
        )
    if legacy and strategy != "Recreate":
        raise RenderError(
            f"recreateOnChange: true contradicts updateStrategy {strategy}",
            path=f"{path}.recreateOnChange",
            fix="remove recreateOnChange (updateStrategy: Recreate says the same)",
        )
    return strategy


@dataclass(frozen=True)
class PodChange:
    """Which fields differ between what we applied last and what we would apply now."""

    spec: tuple[str, ...]  # everything but metadata: needs a restart or a new pod
    metadata: tuple[str, ...]


def _metadata(manifest: Manifest) -> dict[str, Any]:
    """The metadata we set, minus our own hash (it changes with every spec change)."""
    meta = manifest.get("metadata") or {}
    out = {k: deepcopy(meta[k]) for k in METADATA if k in meta}
    out.get("annotations", {}).pop(labels.APPLIED_HASH, None)
    return out


def _body(manifest: Manifest) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}


def pod_change(applied: Manifest, desired: Manifest) -> PodChange:
    """`applied`: what we set last (managed.applied_by), `desired`: what we would set now.

    Without a record of our last apply (an adopted pod) nothing is known to be unchanged: a
    spec change; and we own no field of it, so a metadata-only apply drops nothing of ours and
    brings our labels and annotations at once.
    """
    if not applied:
        return PodChange(("spec",), tuple(changes({}, _metadata(desired), "metadata")))
    return PodChange(
        tuple(changes(_without_admitted(_body(applied), desired), _body(desired))),
        tuple(changes(_metadata(applied), _metadata(desired), "metadata")),
    )


# Kubernetes' DefaultTolerationSeconds admission adds these to every pod's tolerations (a list
# we own whole once we set it): they are not a change of ours.
_ADMITTED_TOLERATIONS = frozenset(
    ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
)


def _without_admitted(body: Manifest, desired: Manifest) -> Manifest:
    tolerations = (body.get("spec") or {}).get("tolerations")
    if not isinstance(tolerations, list):
        return body
    wanted = (desired.get("spec") or {}).get("tolerations") or []
    kept = [
        t
        for t in tolerations
        if t in wanted
        or not (
            isinstance(t, dict)
            and t.get("key") in _ADMITTED_TOLERATIONS
            and t.get("effect") == "NoExecute"
            and t.get("operator") == "Exists"
        )
    ]
    return {**body, "spec": {**body["spec"], "tolerations": kept}}


def decide(strategy: UpdateStrategy, change: PodChange) -> Decision:
    """What to do to an existing pod: a metadata-only (or no) change restarts nothing."""
    if not change.spec or strategy == "InPlace":
        return "apply"
    if strategy == "Recreate":
        return "recreate"
    return "metadata" if change.metadata else "wait"


def metadata_only(applied: Manifest, desired: Manifest) -> Manifest:
    """The new metadata with the spec we applied last: applying it restarts nothing.

    It carries no hash annotation (dropping ours): the pod then matches no manifest we rendered,
    so every pass compares its fields (without a request) until a whole manifest is applied.
    """
    meta = deepcopy(desired["metadata"])
    annotations = meta.pop("annotations", None) or {}
    annotations.pop(labels.APPLIED_HASH, None)
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": meta,
        **deepcopy(_body(applied)),
    }
