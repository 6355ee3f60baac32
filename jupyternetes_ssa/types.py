"""The small typed values that flow between render -> apply -> prune -> status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Manifest = dict[str, Any]
Section = Literal["pvcs", "otherResources", "pods"]
UpdateStrategy = Literal["OnRestart", "InPlace", "Recreate"]  # what a change does to a live pod
# Apply order: claims and other objects (ConfigMaps, Secrets, ...) before the pods that use them.
SECTIONS: tuple[Section, ...] = ("pvcs", "otherResources", "pods")


@dataclass(frozen=True)
class ObjectRef:
    """Identifies one namespaced object."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class RenderedItem:
    """One object an instance should have, from one template item."""

    section: Section
    item: str
    manifest: Manifest
    update_strategy: UpdateStrategy = "OnRestart"  # pods: see strategy.py
    deletion_policy: Literal["Retain", "Delete"] = "Retain"  # what GC may do once unwanted
    adopt: bool = False  # may take over an existing object that has no owner record (migration)
    # No field name came from a placeholder: the offline schema judged every one (validate.py)
    fields_known: bool = False

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    @property
    def ref(self) -> ObjectRef:
        meta = self.manifest["metadata"]
        return ObjectRef(self.manifest["kind"], meta["namespace"], meta["name"])


@dataclass(frozen=True)
class Rendered:
    """Everything one instance should have, PVCs first."""

    instance: ObjectRef
    template: ObjectRef
    items: tuple[RenderedItem, ...] = field(default_factory=tuple)


Action = Literal["created", "configured", "unchanged", "pending", "waiting", "recreating", "failed"]


@dataclass(frozen=True)
class ItemOutcome:
    """What applying one rendered item did. `live` is the object as the apiserver last showed it."""

    item: RenderedItem
    action: Action
    live: Manifest | None = None
    message: str = ""
    fields: tuple[str, ...] = ()  # pending, waiting: the fields not applied yet
    reason: str = ""  # failed: why, as a condition reason (e.g. NameConflict)


@dataclass(frozen=True)
class PruneCandidate:
    """An object no instance wants any more, with why, and whether policy lets us delete it."""

    ref: ObjectRef
    uid: str
    resource_version: str
    reason: str
    allowed: bool  # False: kept by its deletionPolicy Retain (PVCs by default)
    api_version: str = "v1"
    labels: frozenset[tuple[str, str]] = frozenset()  # as listed: a re-check must see the same
    orphan_of: tuple[str, str] | None = None  # its instance (namespace, name), when that is gone


@dataclass
class InstanceResult:
    """One instance's pass, for the summary and the exit code."""

    instance: ObjectRef
    outcomes: list[ItemOutcome] = field(default_factory=list)
    error: str = ""
    reason: str = ""
    status_written: bool = False
    status_due: float = 0.0  # seconds until a held-back status write is due (continuous mode)

    @property
    def converged(self) -> bool:
        return not self.error and all(
            o.action in ("created", "configured", "unchanged", "waiting") for o in self.outcomes
        )


@dataclass
class Summary:
    """A whole pass."""

    instances: list[InstanceResult] = field(default_factory=list)
    pruned: list[PruneCandidate] = field(default_factory=list)
    kept: list[PruneCandidate] = field(default_factory=list)
    prune_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.prune_error and all(r.converged for r in self.instances)
