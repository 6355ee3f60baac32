"""The small typed values that flow between render -> apply -> prune -> status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Manifest = dict[str, Any]
Section = Literal["pvcs", "pods"]
SECTIONS: tuple[Section, ...] = ("pvcs", "pods")  # apply order: claims before the pods mounting them


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
    recreate_on_change: bool = False  # pods: delete + re-create when a change is forbidden in place
    deletion_policy: Literal["Retain", "Delete"] = "Delete"  # PVC items default to Retain

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
