"""Converge one instance's rendered objects with server-side apply.

An object is applied only when the live one lacks our hash annotation or has drifted from what we
set, so a steady state costs no request. When more than one object must change, each is first
validated with a server-side dry-run and nothing is written unless all pass (one instance is never
half-applied). A change Kubernetes forbids in place (most of a pod's spec, shrinking a PVC) is
reported as pending instead, or, for pods that opt in, done by deleting the pod so it is re-created.
What a template change may do to an existing pod is its item's updateStrategy (strategy.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from copy import deepcopy
from dataclasses import dataclass, replace

from jupyternetes_ssa import FIELD_MANAGER, labels, ownership
from jupyternetes_ssa.diff import changes, contested, drift, quantity
from jupyternetes_ssa.kube import POD, ApiError, Kube
from jupyternetes_ssa.managed import applied_by
from jupyternetes_ssa.names import safe_name
from jupyternetes_ssa.observe import Key, Observed, cached, claim_size
from jupyternetes_ssa.ownership import Owner, adopted
from jupyternetes_ssa.schema import MINOR, schema_for
from jupyternetes_ssa.strategy import decide, metadata_only, pod_change
from jupyternetes_ssa.tokens import ITEM as TOKEN_ITEM
from jupyternetes_ssa.types import ItemOutcome, Manifest, ObjectRef, RenderedItem

HELD_BACK = "held back, another item was rejected: "
WAITING = "the change waits for the pod's next start (updateStrategy OnRestart)"
RECREATING = "deleted to apply a template change (updateStrategy Recreate)"


@dataclass(frozen=True)
class Plan:
    item: RenderedItem
    desired: Manifest
    live: Manifest | None
    verdict: ownership.Verdict = "create"
    waits: tuple[str, ...] = ()  # spec fields left for the pod's next start (metadata-only apply)
    recreate: tuple[str, ...] = ()  # spec fields to apply by re-creating the pod


def manifest_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def stamped(
    item: RenderedItem, owner: Owner | None = None, live: Manifest | None = None, verdict="create"
) -> Manifest:
    """The manifest we send: the rendered one plus our annotations (owner record, hash, PVC
    deletion policy)."""
    meta = dict(item.manifest["metadata"])  # only metadata changes: a copy of it, not a deep one
    annotations = meta["annotations"] = dict(meta.get("annotations") or {})
    desired = {**item.manifest, "metadata": meta}
    if item.section != "pods":  # recorded, so GC knows the policy once the template is gone
        annotations[labels.DELETION_POLICY] = item.deletion_policy
    if owner is not None:
        ownership.stamp(desired, owner, live, verdict)
    annotations[labels.APPLIED_HASH] = manifest_hash(desired)
    return desired


def is_current(desired: Manifest, live: Manifest | None) -> bool:
    if live is None or live["metadata"].get("deletionTimestamp"):
        return False
    live_hash = (live["metadata"].get("annotations") or {}).get(labels.APPLIED_HASH)
    return live_hash == desired["metadata"]["annotations"][labels.APPLIED_HASH] and not drift(
        desired, live
    )


def _forbidden_in_place(err: ApiError, live: Manifest | None) -> bool:
    """A 422 on an existing object whose every cause is a forbidden (immutable) field."""
    causes = err.causes
    return (
        live is not None
        and err.status == 422
        and bool(causes)
        and all(c.get("reason") == "FieldValueForbidden" for c in causes)
    )


def _pending(plan: Plan, err: ApiError) -> ItemOutcome:
    fields = tuple(p for p in drift(plan.desired, plan.live) if not p.startswith("metadata"))
    spec_fields = tuple(p for p in fields if p.startswith("spec")) or fields
    return ItemOutcome(plan.item, "pending", plan.live, err.message, spec_fields[:20])


def _rejected(plan: Plan, err: ApiError) -> ItemOutcome:
    if _guard_tripped(err):
        return ItemOutcome(
            plan.item, "failed", plan.live, f"{plan.item.ref} exists", reason="GuardTripped"
        )
    return ItemOutcome(
        plan.item, "failed", plan.live, f"the apiserver rejected {plan.item.ref}: {err.message}"
    )


async def validation(kube: Kube, item: RenderedItem) -> str:
    """The server's field validation for an item's apply. Every field name of a Kubernetes
    kind was checked against the schemas of our minor before any request (validate.py): on a
    server of that minor, "Strict" would repeat our check at about a sixth of the apiserver's
    CPU for the apply; any other server, kind or placeholder-named field gets "Strict"."""
    manifest = item.manifest
    if item.fields_known and schema_for(manifest["apiVersion"], manifest["kind"]):
        return "Ignore" if await kube.server_minor() == MINOR else "Strict"
    return "Strict"


async def _try(kube: Kube, plan: Plan, *, dry_run: bool) -> ItemOutcome:
    try:
        live = await kube.apply(
            ownership.guarded(plan.desired, plan.live, plan.verdict),
            dry_run=dry_run,
            validation=await validation(kube, plan.item),
        )
    except ApiError as err:
        if _forbidden_in_place(err, plan.live):
            return _pending(plan, err)
        return _rejected(plan, err)
    return ItemOutcome(plan.item, "configured" if plan.live else "created", live)


def _adopted(plan: Plan) -> bool:
    return plan.verdict == "adopt" or (plan.live is not None and adopted(plan.live))


def _leftover(plan: Plan) -> str:
    """Why the live object is not one to apply to (terminating, or an earlier incarnation's)."""
    live = plan.live
    if live is None:
        return ""
    if live["metadata"].get("deletionTimestamp"):
        return "waiting for the previous object to finish terminating"
    if plan.item.section == "pods" and plan.verdict == "successor" and not _adopted(plan):
        return "replacing the pod of an earlier incarnation of the instance"
    return ""


async def _replace_leftover(kube: Kube, plan: Plan, why: str, dry_run: bool) -> ItemOutcome:
    meta = plan.live["metadata"]
    if not meta.get("deletionTimestamp"):
        await kube.delete(
            POD, meta["namespace"], meta["name"], uid=meta.get("uid"), dry_run=dry_run
        )
    return ItemOutcome(plan.item, "recreating", plan.live, why)


async def _admitted(kube: Kube, plan: Plan) -> ItemOutcome | None:
    """Would the re-created pod be admitted? A dry-run update of the running pod cannot say
    (pod specs are immutable, and Pod Security, quota and webhooks judge a create), so the new
    manifest is tried as a dry-run create under a scratch name. None when it would be."""
    probe = deepcopy(plan.desired)
    probe["metadata"]["name"] = safe_name(f"{plan.desired['metadata']['name']}-recreate-check")
    try:
        await kube.apply(
            ownership.guarded(probe, None),
            dry_run=True,
            validation=await validation(kube, plan.item),
        )
    except ApiError as err:
        if err.status == 409:  # the scratch name is taken: nothing to learn, nothing refused
            return None
        message = f"the re-created pod would be refused, so {plan.item.ref} is kept: {err.message}"
        return ItemOutcome(plan.item, "failed", plan.live, message)
    return None


async def _recreate(kube: Kube, plan: Plan, fields: tuple[str, ...], why: str) -> ItemOutcome:
    """Delete the pod so that it is re-created, only once the new one would be admitted: a
    template the apiserver refuses never costs a running server."""
    if (refused := await _admitted(kube, plan)) is not None:
        return refused
    meta = plan.live["metadata"]
    await kube.delete(POD, meta["namespace"], meta["name"], uid=meta.get("uid"))
    return ItemOutcome(plan.item, "recreating", plan.live, why, fields)


def _dry_run_report(plan: Plan, check: ItemOutcome) -> ItemOutcome:
    """For `diff`: what the apply would change, read off the server's dry-run answer."""
    if check.action not in ("created", "configured"):
        return check
    ours = f'metadata.annotations["{labels.APPLIED_HASH}"]'
    fields = (
        tuple(f for f in changes(plan.live, cached(check.live)) if f != ours)
        if plan.live
        else ("(new object)",)
    )
    return ItemOutcome(check.item, check.action, check.live, "dry run", fields)


async def _validate(kube: Kube, todo: list[Plan]) -> list[ItemOutcome]:
    return list(await asyncio.gather(*(_try(kube, p, dry_run=True) for p in todo)))


def _held_back(plan: Plan, cause: ItemOutcome) -> ItemOutcome:
    return ItemOutcome(plan.item, "failed", plan.live, f"{HELD_BACK}{cause.message}")


async def _apply_one(
    kube: Kube, plan: Plan, checked: ItemOutcome | None, recreate_pods: bool
) -> ItemOutcome:
    """The real apply (unless the dry-run already showed the change is pending)."""
    if plan.recreate:
        return await _recreate_planned(kube, plan, checked)
    outcome = checked
    if outcome is None or outcome.action != "pending":
        outcome = await _try(kube, plan, dry_run=False)
    if (
        outcome.action == "pending"
        and plan.item.section == "pods"
        and (recreate_pods or plan.item.update_strategy == "Recreate")
        and not _adopted(plan)
    ):
        why = (
            "deleted to apply a change that Kubernetes forbids in place; it is re-created once gone"
        )
        outcome = await _recreate(kube, plan, outcome.fields, why)
    return outcome


def _follow_strategy(plan: Plan, recreate_pods: bool) -> Plan | ItemOutcome:
    """A changed pod that exists: apply, apply metadata only, wait or re-create (strategy.py)."""
    applied = applied_by(plan.live, FIELD_MANAGER)
    change = pod_change(applied, plan.desired)
    decision = decide("Recreate" if recreate_pods else plan.item.update_strategy, change)
    if decision == "recreate" and _adopted(plan):  # never deleted by us: its metadata only
        decision = "metadata"
    if decision == "metadata":
        return replace(plan, desired=metadata_only(applied, plan.desired), waits=change.spec[:20])
    if decision == "wait":  # no request: an idle pass stays free while the update waits
        return ItemOutcome(plan.item, "waiting", plan.live, WAITING, change.spec[:20])
    if decision == "recreate":
        return replace(plan, recreate=change.spec[:20])
    return plan


async def _recreate_planned(kube: Kube, plan: Plan, checked: ItemOutcome | None) -> ItemOutcome:
    """Delete the pod only once its new manifest passed a dry-run: a template the apiserver
    rejects never costs a running server."""
    check = checked or await _try(kube, plan, dry_run=True)
    if check.action == "failed":
        return check
    return await _recreate(kube, plan, plan.recreate, RECREATING)


def _as_planned(plan: Plan, outcome: ItemOutcome) -> ItemOutcome:
    """A metadata-only apply leaves the spec waiting; a dry run reports the planned re-create."""
    if outcome.action in ("failed", "recreating"):
        return outcome
    if plan.recreate:
        return ItemOutcome(
            plan.item, "recreating", plan.live, f"dry run: {RECREATING}", plan.recreate
        )
    if plan.waits:
        return ItemOutcome(plan.item, "waiting", outcome.live, WAITING, plan.waits)
    return outcome


async def _create_all(kube: Kube, todo: list[Plan]) -> list[ItemOutcome]:
    """A new server's objects, created in order (PVCs first) without a dry-run: a start that
    succeeds costs its creates and nothing more. The first refusal stops the rest, and what
    was created stays: the PVC made before a refused pod is new, empty and ours, and the next
    start uses it. Nothing is deleted to undo a start: a claim may bind an existing volume at
    once, and releasing it again would cut the user off from it; and no pod is ever made before
    its claims, so it never mounts a claim of that name that is not ours."""
    done: list[ItemOutcome] = []
    for index, plan in enumerate(todo):
        outcome = await _try(kube, plan, dry_run=False)
        done.append(outcome)
        if outcome.action == "failed":
            return [*done, *(_held_back(p, outcome) for p in todo[index + 1 :])]
    return done


async def _all_or_nothing(kube: Kube, todo: list[Plan], recreate_pods: bool) -> list[ItemOutcome]:
    """New objects are created in order (_create_all); changes to existing ones are all or
    nothing: validated by a dry-run, all but the first, which is applied for real: if the
    apiserver rejects it nothing has been written yet."""
    if all(p.live is None and p.verdict == "create" for p in todo):
        return await _create_all(kube, todo)
    checks = await _validate(kube, todo[1:])
    rejected = next((c for c in checks if c.action == "failed"), None)
    if rejected is not None:
        return [
            _held_back(todo[0], rejected),
            *(
                c if c.action == "failed" else _held_back(p, rejected)
                for p, c in zip(todo[1:], checks, strict=True)
            ),
        ]
    outcomes: list[ItemOutcome] = []
    for plan, checked in zip(todo, [None, *checks], strict=True):  # PVCs first: items' order
        outcome = await _apply_one(kube, plan, checked, recreate_pods)
        outcomes.append(outcome)
        if len(outcomes) == 1 and outcome.action == "failed":  # rejected before any write
            return [outcome, *(_held_back(p, outcome) for p in todo[1:])]
    return outcomes


async def _extended_by_others(kube: Kube, current: list[Plan]) -> set[ObjectRef]:
    """Current-looking objects where another manager holds fields we set, and the server says
    our apply would change something (it took over a list or map of ours and extended it).
    Costs a dry-run only for such objects: none in a steady state of our own."""
    suspects = [p for p in current if contested(p.desired, p.live, FIELD_MANAGER)]
    checks = await asyncio.gather(*(_would_change(kube, p) for p in suspects))
    return {p.item.ref for p, changed in zip(suspects, checks, strict=True) if changed}


async def _would_change(kube: Kube, plan: Plan) -> bool:
    try:
        after = await kube.apply(
            ownership.guarded(plan.desired, plan.live, plan.verdict),
            dry_run=True,
            validation=await validation(kube, plan.item),
        )
    except ApiError:
        return True  # let the real apply report it
    return bool(changes(plan.live, cached(after)))  # the caches keep our fields: compare those


def _guard_tripped(err: ApiError) -> bool:
    """The object is not what our caches said: it exists after all (made by someone else, or
    not yet in our watch), or the one we saw was replaced or deleted."""
    return err.status == 409 or (
        err.status == 422 and any(c.get("field") == "metadata.uid" for c in err.causes)
    )


def _conflict(item: RenderedItem, decision: ownership.Claim) -> ItemOutcome:
    holder = decision.holder
    if item.item == TOKEN_ITEM:  # its name is not the admin's to change: no resourceName fix
        message = (
            f"{item.ref} exists and is not this instance's token Secret (it belongs to {holder}); "
            "rename or delete that Secret (the reconciler never overwrites a Secret it did not "
            "write)"
        )
        return ItemOutcome(item, "failed", None, message, reason="TokenSecretConflict")
    message = ownership.conflict_message(str(item.ref), holder, item.item, decision.adoptable)
    return ItemOutcome(item, "failed", None, message, reason="NameConflict")


def _plans(
    items: tuple[RenderedItem, ...], owner: Owner, live_of, alive
) -> tuple[list[Plan], dict[ObjectRef, ItemOutcome]]:
    """A plan per item, and the items refused because another owns their object."""
    plans, refused = [], {}
    for item in items:
        live = live_of(item)
        decision = ownership.claim(live, owner, alive, item.adopt)
        if not decision.allowed:
            refused[item.ref] = _conflict(item, decision)
        desired = stamped(item, owner, live, decision.verdict)
        plans.append(Plan(item, _grown_claim_kept(desired, live), live, decision.verdict))
    return plans, refused


def _smaller_claim_asked(plan: Plan) -> ItemOutcome | None:
    """Told, not asked for: the template wants less than the claim has (see _grown_claim_kept)."""
    want, have = claim_size(plan.item.manifest), claim_size(plan.desired)
    if want == have or quantity(want) is None or quantity(have) is None:
        return None
    message = (
        f"the claim has {have} and the template asks for {want}: Kubernetes never shrinks a "
        "claim, so it keeps its size (the template's applies to new claims)"
    )
    return ItemOutcome(
        plan.item, "pending", plan.live, message, ("spec.resources.requests.storage",)
    )


def _grown_claim_kept(desired: Manifest, live: Manifest | None) -> Manifest:
    """A claim grown beyond the template's size (an admin's resize, or a smaller template)
    keeps its size: Kubernetes never shrinks a claim, and asking it to on every pass would be a
    fight. The hash stays the template's: an admin's resize costs no write of ours, and a
    template that asks for more than the claim has still grows it."""
    want, have = claim_size(desired), claim_size(live or {})
    grown = quantity(have) is not None and quantity(want) is not None
    if not grown or quantity(have) <= quantity(want):
        return desired
    spec = desired["spec"]
    requests = {**spec["resources"]["requests"], "storage": have}
    return {**desired, "spec": {**spec, "resources": {**spec["resources"], "requests": requests}}}


async def apply_items(
    kube: Kube,
    items: tuple[RenderedItem, ...],
    observed: Observed,
    owner: Owner,
    *,
    recreate_pods: bool = False,
    dry_run: bool = False,
) -> list[ItemOutcome]:
    """Converge `items` (already in apply order) and say what happened to each.

    An object our caches did not show (made by hand, or by someone else) trips the uid guard
    before anything is written; it is then read once and judged like any other.
    """
    fetched: dict[ObjectRef, Manifest | None] = {}
    outcomes = await _apply_items(kube, items, observed, owner, fetched, recreate_pods, dry_run)
    tripped = [o.item for o in outcomes if o.reason == "GuardTripped"]
    if not tripped:
        return outcomes
    for made in outcomes:  # written by the first attempt: current now, not to be made again
        if made.action in ("created", "configured") and made.live is not None and not dry_run:
            fetched[made.item.ref] = made.live
    # Items held back behind the trip, whose objects our caches did not show either (a pod
    # and its claim adopted together: neither carries our labels yet), are read as well.
    held = [
        o.item
        for o in outcomes
        if o.message.startswith(HELD_BACK) and o.live is None and o.item.ref not in fetched
    ]
    for item in [*tripped, *held]:
        res = await kube.resource(item.manifest["apiVersion"], item.manifest["kind"])
        fetched[item.ref] = await kube.get(res, item.ref.namespace, item.ref.name)
    outcomes = await _apply_items(kube, items, observed, owner, fetched, recreate_pods, dry_run)
    return [
        replace(o, reason="ApplyFailed", message=f"{o.item.ref} changed under us; retrying")
        if o.reason == "GuardTripped"
        else o
        for o in outcomes
    ]


async def _apply_items(
    kube: Kube,
    items: tuple[RenderedItem, ...],
    observed: Observed,
    owner: Owner,
    fetched: dict[ObjectRef, Manifest | None],
    recreate_pods: bool,
    dry_run: bool,
) -> list[ItemOutcome]:
    def live_of(item: RenderedItem) -> Manifest | None:
        return fetched[item.ref] if item.ref in fetched else observed.live(item.manifest)

    plans, refused = _plans(items, owner, live_of, observed.alive)
    if refused:
        first = next(iter(refused.values()))
        return [refused.get(p.item.ref) or _held_back(p, first) for p in plans]
    current = [p for p in plans if is_current(p.desired, p.live)]
    for plan in current:  # converged: nothing refused is remembered for it any more
        _remember_refusal(observed, plan, None)
    extended = await _extended_by_others(kube, current)
    done = {
        p.item.ref: _smaller_claim_asked(p) or ItemOutcome(p.item, "unchanged", p.live)
        for p in current
        if p.item.ref not in extended
    }
    for plan in plans:
        if plan.item.ref not in done and (why := _leftover(plan)):
            done[plan.item.ref] = await _replace_leftover(kube, plan, why, dry_run)
    for index, plan in enumerate(plans):
        if plan.item.ref not in done and plan.item.section == "pods" and plan.live is not None:
            followed = _follow_strategy(plan, recreate_pods)
            if isinstance(followed, ItemOutcome):
                done[plan.item.ref] = followed
            else:
                plans[index] = followed
    for plan in plans:
        if plan.item.ref not in done and (known := _refused_before(observed, plan)) is not None:
            done[plan.item.ref] = known
    todo = [p for p in plans if p.item.ref not in done]
    if dry_run:
        outcomes = [
            _dry_run_report(p, c) for p, c in zip(todo, await _validate(kube, todo), strict=True)
        ]
    else:
        outcomes = await _all_or_nothing(kube, todo, recreate_pods) if todo else []
    done.update({p.item.ref: _as_planned(p, o) for p, o in zip(todo, outcomes, strict=True)})
    if not dry_run:
        for plan, outcome in zip(todo, outcomes, strict=True):
            _remember_refusal(observed, plan, outcome)
    return [done[p.item.ref] for p in plans]


def _refusal_key(plan: Plan) -> tuple[tuple[str, Key], tuple[str, str]] | None:
    if plan.live is None:
        return None
    version = plan.live["metadata"].get("resourceVersion", "")
    ours = plan.desired["metadata"].get("annotations", {}).get(labels.APPLIED_HASH, "")
    return (plan.item.ref.kind, (plan.item.ref.namespace, plan.item.ref.name)), (version, ours)


def _refused_before(observed: Observed, plan: Plan) -> ItemOutcome | None:
    """The same change to the same version of the object was refused in place already (say, a
    claim an admin grew: Kubernetes never shrinks one): report it again, without asking again."""
    key = _refusal_key(plan)
    known = observed.refused.get(key[0]) if key else None
    if key is None or known is None or known[0] != key[1]:
        return None
    return replace(known[1], item=plan.item, live=plan.live)


def _remember_refusal(observed: Observed, plan: Plan, outcome: ItemOutcome | None) -> None:
    key = _refusal_key(plan)
    if key is None:
        return
    if outcome is not None and outcome.action == "pending":
        observed.refused[key[0]] = (key[1], outcome)
    else:
        observed.refused.pop(key[0], None)
