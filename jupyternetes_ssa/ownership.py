"""Who an object belongs to: the owner record stamped at creation, and every decision on it.

Each object we create carries `OWNER` = `<namespace>/<name>/<uid>` of the instance that created
it. Apply touches a live object only when that record names the instance being reconciled (or an
earlier incarnation of it, under the same name, that no longer exists); garbage collection
deletes only what carries such a record (and our labels and field manager). An object with no
record of ours is never applied to, unless the template item asks to `adopt` it; an adopted
object is marked `ADOPTED` and never deleted by garbage collection. A record counts only on an
object our field manager has written (`written_by_us`): anyone can type an annotation and
labels. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.types import Manifest

OWNER = "jupyternetes-ssa.kadense.io/owner"
ADOPTED = "jupyternetes-ssa.kadense.io/adopted"


CREATE_ONLY = "18446744073709551615"  # the largest resourceVersion: no object has it


@dataclass(frozen=True)
class Owner:
    """An instance, as recorded on what it created."""

    namespace: str
    name: str
    uid: str

    @property
    def record(self) -> str:
        return f"{self.namespace}/{self.name}/{self.uid}"

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def __str__(self) -> str:
        return f"JupyterNotebookInstance {self.namespace}/{self.name}"


def _annotations(obj: Manifest) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def owner_of(obj: Manifest) -> Owner | None:
    """The recorded owner, or None: no record, one we cannot read, or one that disagrees with
    the object (another namespace, or an instance its labels do not name: tampered)."""
    parts = _annotations(obj).get(OWNER, "").split("/")
    if len(parts) != 3 or not all(parts):
        return None
    owner = Owner(*parts)
    meta = obj.get("metadata", {})
    labelled = (meta.get("labels") or {}).get(labels.INSTANCE)
    if owner.namespace != meta.get("namespace", owner.namespace) or (
        labelled is not None and labelled != safe_label_value(owner.name)
    ):
        return None
    return owner


def disowned(obj: Manifest) -> bool:
    """It carries an owner record that disagrees with it (tampered): no one's. Not an object
    made before records (their labels name them), so never applied to nor collected."""
    return OWNER in _annotations(obj) and owner_of(obj) is None


def adopted(obj: Manifest) -> bool:
    return _annotations(obj).get(ADOPTED) == "true"


def written_by_us(obj: Manifest) -> bool:
    """Our field manager has an entry of its own in the object's managedFields: the proof that
    we wrote it, which its owner record (an annotation anyone can type, or copy from
    `kubectl get -o yaml`) is not. Every object we create is server-side applied under
    FIELD_MANAGER, and the entry stays while we hold any field of it; the caches keep it too
    (observe.cached packs and folds our entry, never drops it; it drops only subresource
    entries, which no apply of ours makes, so they are not counted here either).

    - Managers Kubernetes adds (kube-controller-manager binding a PVC, the kubelet's status)
      and the relabel sweep's (`jupyternetes-ssa-relabel`) sit beside ours: still ours.
    - Adopted objects got our entry with their first apply: ours from then on.
    - managedFields cleared by someone: see vouched_for; never collected until our next apply
      has put our entry back.
    - A forger who writes managedFields, or names our manager (`--field-manager`, a free-form
      request parameter RBAC cannot restrict), passes: only who may create pods, PVCs and
      Secrets in the namespace stops that (tests/integration/test_adv8_forgery.py)."""
    return any(
        m.get("manager") == FIELD_MANAGER and not m.get("subresource")
        for m in obj.get("metadata", {}).get("managedFields") or []
    )


def vouched_for(obj: Manifest) -> bool:
    """Whether its owner record may be believed: our field manager wrote the object, or no
    writer at all is on record (managedFields cleared, by a tool or by hand: the apiserver then
    keeps none until the next write). The latter is no evidence either way, and refusing it
    would stop a running user's server whose pod was stripped (the hub reads a NameConflict
    as the end of the server); believed, our next apply puts our entry back. A forger gains
    nothing by it that naming our manager would not give."""
    writers = [
        m for m in obj.get("metadata", {}).get("managedFields") or [] if not m.get("subresource")
    ]
    return not any(m.get("manager") for m in writers) or written_by_us(obj)


def proven_owner(obj: Manifest) -> Owner | None:
    """The recorded owner, if its record may be believed (see vouched_for)."""
    return owner_of(obj) if vouched_for(obj) else None


def managed_by_us(obj: Manifest) -> bool:
    """Our label and our field manager: what releases before the owner record left behind."""
    labelled = (obj.get("metadata", {}).get("labels") or {}).get(labels.MANAGED_BY)
    return labelled == labels.MANAGED_BY_VALUE and written_by_us(obj)


def _legacy_of(obj: Manifest, instance: Owner) -> bool:
    """Created by us before owner records existed, for an instance of this name."""
    lbl = obj.get("metadata", {}).get("labels") or {}
    return (
        managed_by_us(obj)
        and OWNER not in _annotations(obj)
        and lbl.get(labels.INSTANCE) == safe_label_value(instance.name)
        and lbl.get(labels.INSTANCE_NAMESPACE, obj["metadata"].get("namespace"))
        == safe_label_value(instance.namespace)
    )


Verdict = Literal["create", "mine", "successor", "adopt", "conflict"]


@dataclass(frozen=True)
class Claim:
    """May `instance` apply to this object, and if not, who has it (for the message)."""

    verdict: Verdict
    holder: str = ""
    adoptable: bool = False  # a conflict that `adopt: true` would resolve (for the message)

    @property
    def allowed(self) -> bool:
        return self.verdict != "conflict"


def claim(
    live: Manifest | None, instance: Owner, alive: Callable[[Owner], bool], adopt: bool
) -> Claim:
    """The ownership decision for one object an instance wants.

    - absent: create it (guarded: the apply fails if the object exists after all);
    - an owner record not vouched for (another writer, not us): see _unproven;
    - recorded for this instance: ours;
    - recorded for an earlier incarnation of the same name that is gone: ours (a user's PVC
      outlives the server that created it, and the next start must find it);
    - recorded for any other instance, or not ours at all: a conflict, unless `adopt` is set
      and the object has no owner record (we never take an object from another instance).
    """
    if live is None:
        return Claim("create")
    if OWNER in _annotations(live) and not vouched_for(live):
        return _unproven(live, instance, alive, adopt)
    recorded = owner_of(live)
    if recorded is None:
        if disowned(live):
            return Claim("conflict", "no instance: its owner record disagrees with its labels")
        if _legacy_of(live, instance):
            return Claim("mine")
        if managed_by_us(live):  # made by an older release, for another instance
            return Claim("conflict", "another instance (made before owner records)")
        if adopt:
            return Claim("adopt")
        return Claim("conflict", "someone else (it has no owner record of ours)", adoptable=True)
    if recorded.key == instance.key:
        if recorded.uid == instance.uid:
            return Claim("mine")
        if not alive(recorded):
            return Claim("successor")
    state = "" if alive(recorded) else ", which no longer exists"
    return Claim("conflict", f"{recorded}{state}")


def _unproven(
    live: Manifest, instance: Owner, alive: Callable[[Owner], bool], adopt: bool
) -> Claim:
    """An owner record on an object another wrote and our field manager never did (made or
    copied by hand, or rewritten after its managedFields were cleared) proves nothing, whatever
    instance and uid it names: a conflict, never applied to (a hand-made PVC would be mounted
    into the user's pod as theirs).

    It counts as no record at all, so `adopt: true` takes the object over like any other made
    outside jupyternetes (marked adopted, never deleted by us): a restored backup, or our own
    object whose managedFields were cleared. Except when it names another instance that
    exists: it may be that instance's object, cleared, and adopt never takes from another."""
    recorded = owner_of(live)
    other = recorded is not None and recorded.key != instance.key and alive(recorded)
    if adopt and not other:
        return Claim("adopt")
    names = _annotations(live)[OWNER]
    holder = (
        f"no instance: its owner record ({names}) was not written by jupyternetes-ssa (it has no "
        f"field manager `{FIELD_MANAGER}` in metadata.managedFields: made or copied by hand, "
        "or its managedFields were cleared)"
    )
    return Claim("conflict", holder, adoptable=not other)


def conflict_message(ref: str, holder: str, item: str, adoptable: bool) -> str:
    """What a person needs: the object, who has it, and the ways out."""
    fixes = [
        "give the item another resourceName so the names no longer collide",
        f"or delete {ref} if nothing needs it",
    ]
    if adoptable:
        fixes.append(
            "or, to take over an object made outside jupyternetes (a migration), set "
            f"`adopt: true` on item {item}"
        )
    return (
        f"{ref} already exists and belongs to {holder}; the reconciler never takes over an "
        f"object it did not create for this instance, so this instance's other items wait. "
        f"To fix: {'; '.join(fixes)}"
    )


def stamp(desired: Manifest, instance: Owner, live: Manifest | None, verdict: Verdict) -> None:
    """Record the owner (and adoption) on the manifest we send. An adopted object gets no
    ownerReference: Kubernetes' garbage collector would delete it with its instance."""
    annotations = desired["metadata"].setdefault("annotations", {})
    annotations[OWNER] = instance.record
    if verdict == "adopt" or (live is not None and adopted(live)):
        annotations[ADOPTED] = "true"
        desired["metadata"].pop("ownerReferences", None)


def guarded(desired: Manifest, live: Manifest | None, verdict: Verdict = "mine") -> Manifest:
    """The manifest with a precondition, so that an apply never lands on an object we did not
    decide on. For an object we saw, its uid: the apiserver refuses (422, uid is immutable) to
    apply it to any other object of that name; taking one over (adopt, or an earlier
    incarnation's) also needs the resourceVersion we judged, so that two instances racing for
    one object cannot both win (409 for the later). For one we mean to create, a
    resourceVersion no object can have: the apiserver ignores it when it creates, and refuses
    (409) to apply it to an object that exists after all (made by hand, or not yet seen)."""
    if live is None:
        guard = {"resourceVersion": CREATE_ONLY}
    else:
        guard = {"uid": live["metadata"]["uid"]}
        if verdict in ("adopt", "successor"):
            guard["resourceVersion"] = live["metadata"]["resourceVersion"]
    return {**desired, "metadata": {**desired["metadata"], **guard}}
