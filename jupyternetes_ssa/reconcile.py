"""Drive the pipeline for one instance, and for one whole pass: render -> apply -> status, prune.

The same `reconcile_instance` serves once mode (over fresh lists) and continuous mode (over the
watch caches); it never raises for a problem of the instance's own: that becomes its status, and
the other instances carry on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from jupyternetes_ssa import events, labels
from jupyternetes_ssa.apply import HELD_BACK, apply_items
from jupyternetes_ssa.errors import (
    JupyternetesError,
    KindNotAllowed,
    TemplateNotAllowed,
    TemplateNotFound,
)
from jupyternetes_ssa.kube import INSTANCE, ApiError, Kube, kind_key
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.observe import Key, Observed, identity, key_of, observe, owned_resources
from jupyternetes_ssa.ownership import Owner, adopted, proven_owner
from jupyternetes_ssa.prune import Wanted, plan_prune, plan_purge, prune, remaining
from jupyternetes_ssa.relabel import relabel
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import instance_key
from jupyternetes_ssa.status import (
    ItemView,
    instance_status,
    needs_write,
    purge_status,
    views_from_outcomes,
)
from jupyternetes_ssa.tenancy import check_grant, template_key
from jupyternetes_ssa.tokens import prepare, template_views, with_token_secret
from jupyternetes_ssa.types import (
    InstanceResult,
    ItemOutcome,
    Manifest,
    ObjectRef,
    Rendered,
    RenderedItem,
    Summary,
)
from jupyternetes_ssa.validate import validated_render
from jupyternetes_ssa.wait import wait_gone

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_record(instance: Manifest) -> Owner:
    ns, name = key_of(instance)
    return Owner(ns, name, instance["metadata"].get("uid", ""))


def instance_ref(instance: Manifest) -> ObjectRef:
    ns, name = key_of(instance)
    return ObjectRef("JupyterNotebookInstance", ns, name)


def resolve_template(observed: Observed, instance: Manifest, settings: Settings) -> Manifest:
    """The template the instance names, if it exists, the admin allows its namespace and it
    serves the instance's namespace (tenancy.py)."""
    ns, name = key_of(instance)
    t_ns, t_name = template_key(instance)
    subject = f"JupyterNotebookInstance {ns}/{name}"
    if not settings.template_allowed(t_ns):
        allowed = ", ".join(settings.template_namespaces + settings.catalog_namespaces)
        raise TemplateNotAllowed(
            f"templates may only come from namespace(s) {allowed}, not {t_ns!r}",
            subject=subject,
            path="spec.template.namespace",
            fix=f"point spec.template at a template in {allowed}, or ask the admin to add "
            f"--template-namespace {t_ns}",
        )
    template = observed.templates.get((t_ns, t_name))
    if template is None:
        raise TemplateNotFound(
            f"JupyterNotebookTemplate {t_ns}/{t_name} does not exist",
            subject=subject,
            path="spec.template",
            fix="create that template, or fix spec.template.name/namespace",
        )
    check_grant(
        template,
        ns,
        catalog=settings.catalog_namespaces,
        namespace_labels=observed.namespace_labels(ns),
        subject=subject,
    )
    return template


def live_views(observed: Observed, instance: Manifest) -> list[ItemView]:
    """The instance's existing objects, for a status when its template cannot be rendered."""
    ns, name = key_of(instance)
    value = safe_label_value(name)
    views = []
    for objects in observed.owned.values():
        for (o_ns, o_name), obj in objects.items():
            lbl = obj["metadata"].get("labels") or {}
            if o_ns != ns or lbl.get(labels.INSTANCE) != value:
                continue
            section = next((s for s, key in labels.ITEM_LABEL.items() if key in lbl), None)
            if section is not None:
                views.append(ItemView(section, lbl[labels.ITEM_LABEL[section]], o_name, obj))
    return views


def check_kinds(rendered: Rendered, observed: Observed, subject: str) -> None:
    """Only the kinds this reconciler watches (pods, PVCs, --allow-kind) may be applied."""
    for item in rendered.items:
        manifest = item.manifest
        if observed.store_for(manifest) is None:
            spec = kind_key(manifest["apiVersion"], manifest["kind"])
            raise KindNotAllowed(
                f"{manifest['kind']} ({manifest['apiVersion']}) is not a kind this reconciler "
                "may create",
                subject=subject,
                path=f"{item.section}[{item.item}].kind",
                fix=f"ask the cluster admin to start the reconciler with --allow-kind {spec} "
                "(and to grant it RBAC on that kind), or remove the item",
            )


class StaleInstance(Exception):
    """The instance changed since the cache showed it: its status must be judged again."""


async def write_status(
    kube: Kube, observed: Observed, instance: Manifest, status: dict, dry_run: bool
) -> bool:
    """Server-side apply our part of the status, only when it differs; False if not written."""
    if dry_run or not needs_write(instance, status):
        return False
    ns, name = key_of(instance)
    body = {
        "apiVersion": INSTANCE.api_version,
        "kind": INSTANCE.kind,
        # The version judged: a status computed from a lagging cache never lands on a newer
        # instance, nor on another of the same name (the apiserver answers 409; the status
        # subresource ignores a uid).
        "metadata": {"name": name, "namespace": ns}
        | ({"resourceVersion": rv} if (rv := instance["metadata"].get("resourceVersion")) else {}),
        # An emptied map is left out, not sent as {}: applying {} over a map we owned leaves
        # null, which the CRD's schema refuses (422), e.g. status.pods after a purge.
        "status": {k: v for k, v in status.items() if v != {}},
    }
    try:
        observed.remember(await kube.apply(body, subresource="status"))
    except ApiError as err:
        if err.status == 404:  # deleted meanwhile
            return False
        if err.status == 409:  # changed or replaced meanwhile: judged again once seen
            raise StaleInstance() from err
        raise
    return True


async def _converge(
    kube: Kube, observed: Observed, instance: Manifest, settings: Settings, result: InstanceResult
) -> tuple[list[ItemView], Rendered | None]:
    try:
        rendered = validated_render(resolve_template(observed, instance, settings), instance)
        check_kinds(rendered, observed, str(result.instance))
        starting = not any(observed.live(i.manifest) for i in rendered.items if i.section == "pods")
        rendered = await with_token_secret(
            kube, observed.sealing, instance, rendered, settings, starting=starting
        )
    except JupyternetesError as err:
        result.error, result.reason = str(err), err.reason
        return live_views(observed, instance), None
    items, renamed = renamed_pods(rendered.items, instance, observed, settings)
    applied = await apply_items(
        kube,
        items,
        observed,
        owner_record(instance),
        recreate_pods=settings.recreate_pods,
        dry_run=settings.dry_run,
    )
    by_item = {(o.item.section, o.item.item): o for o in [*applied, *renamed]}
    result.outcomes = [by_item[i.section, i.item] for i in rendered.items]
    for outcome in result.outcomes:
        live = outcome.live
        if outcome.action in ("created", "configured", "waiting") and not settings.dry_run and live:
            observed.remember(live, outcome.item.manifest if outcome.action == "created" else None)
    failed = sorted(
        (o for o in result.outcomes if o.action == "failed"),
        key=lambda o: o.message.startswith(HELD_BACK),
    )
    if failed:
        result.error, result.reason = failed[0].message, failed[0].reason or "ApplyFailed"
    return template_views(views_from_outcomes(result.outcomes)), rendered


def renamed_pods(
    items: tuple[RenderedItem, ...], instance: Manifest, observed: Observed, settings: Settings
) -> tuple[tuple[RenderedItem, ...], list[ItemOutcome]]:
    """A pod whose item now renders another name (its resourceName changed) is a template
    change like any other: under OnRestart the running pod stays, under its old name, and the
    new name waits for the pod's next start (it is not created beside it, nor the old one
    pruned)."""
    if settings.recreate_pods:
        return items, []
    current = ((instance.get("status") or {}).get("pods")) or {}
    keep, waiting = [], []
    for item in items:
        old = (current.get(item.item) or {}).get("resourceName")
        live = observed.pods.get((item.ref.namespace, old)) if old and old != item.name else None
        recorded = proven_owner(live) if live else None  # a hand-made pod is not its pod
        if (
            item.section == "pods"
            and item.update_strategy == "OnRestart"
            and live is not None
            and not live["metadata"].get("deletionTimestamp")
            and recorded is not None
            and recorded.key == key_of(instance)
        ):
            why = f"renamed to {item.name}: the new name waits for the pod's next start"
            waiting.append(ItemOutcome(item, "waiting", live, why, ("metadata.name",)))
        else:
            keep.append(item)
    return tuple(keep), waiting


async def _purge(
    kube: Kube, observed: Observed, instance: Manifest, settings: Settings, result: InstanceResult
) -> None:
    """spec.purge: delete every pod and PVC of the instance, then report phase Purged."""
    ns, name = key_of(instance)
    candidates = plan_purge(observed, ns, name)
    try:
        deleted = await prune(kube, candidates, dry_run=settings.dry_run)
    except ApiError as err:
        result.error, result.reason = f"{result.instance}: purge failed: {err}", "PurgeFailed"
        deleted = []
    for cand in deleted:
        observed.forget(
            {
                "apiVersion": cand.api_version,
                "kind": cand.ref.kind,
                "metadata": {"namespace": cand.ref.namespace, "name": cand.ref.name},
            }
        )
    left = remaining(observed, ns, name)
    if observed.strays_of is not None and not settings.dry_run:  # hidden from a shard's caches
        # each one found still exists, relabelled or not (a 409 leaves it to the next pass)
        hidden = [
            o
            for o in await observed.strays_of(safe_label_value(name))
            if instance_key(o) == (ns, name)
        ]
        await relabel(kube, hidden)
        left += sum(1 for o in hidden if not adopted(o))  # a purge keeps adopted ones
    status = purge_status(instance, left, now=now(), error=result.error)
    result.status_written = await write_status(kube, observed, instance, status, settings.dry_run)
    if left and not result.error:
        result.reason = "Purging"


STALE_RETRY_SECONDS = 1.0
# Seconds to hold back a status write that is only progress (0: write now); continuous mode's.
StatusPace = Callable[[Manifest, dict], float]


async def reconcile_instance(
    kube: Kube,
    observed: Observed,
    instance: Manifest,
    settings: Settings,
    pace: StatusPace | None = None,
) -> tuple[InstanceResult, set | None]:
    """Converge one instance and write its status; returns what it wants (None: unknown)."""
    result = InstanceResult(instance_ref(instance))
    if instance["metadata"].get("deletionTimestamp"):
        return result, None
    if (instance.get("spec") or {}).get("purge"):
        try:
            await _purge(kube, observed, instance, settings, result)
        except StaleInstance:
            result.status_due = STALE_RETRY_SECONDS
        except ApiError as err:
            result.error, result.reason = f"{result.instance}: {err}", "ApiError"
        return result, None
    try:
        views, rendered = await _converge(kube, observed, instance, settings, result)
        status = instance_status(
            instance, views, observed, now=now(), error=result.error, reason=result.reason
        )
        result.status_due = pace(instance, status) if pace and not settings.dry_run else 0.0
        if not result.status_due:
            result.status_written = await write_status(
                kube, observed, instance, status, settings.dry_run
            )
    except StaleInstance:
        result.status_due = STALE_RETRY_SECONDS  # continuous mode; once mode: the next pass
    except ApiError as err:
        result.error, result.reason = f"{result.instance}: {err}", "ApiError"
        return result, None
    if not settings.dry_run:
        await events.record(kube, instance, events.notes(result, result.status_written))
    if result.error:
        log.warning("%s", result.error)
    # Held back or failed: what it has stays (a renamed item must not lose the old object while
    # the new one cannot be made).
    wanted = (
        {identity(i.manifest) for i in rendered.items}
        | {identity(o.live) for o in result.outcomes if o.action == "waiting" and o.live}
        if rendered and not result.error
        else None
    )
    return result, wanted


async def _finish_recreates(
    kube: Kube, observed: Observed, instance: Manifest, settings: Settings, result: InstanceResult
):
    """Once mode: wait for pods we deleted to be gone, then converge the instance again."""
    recreating = [o for o in result.outcomes if o.action == "recreating"]
    for o in recreating:
        live = o.live or {}
        meta = live.get("metadata", {})
        res = await kube.resource(live["apiVersion"], live["kind"])
        await wait_gone(kube, res, meta["namespace"], meta["name"], meta.get("uid"))
        observed.forget(live)
    return await reconcile_instance(kube, observed, instance, settings)


async def reconcile_once(kube: Kube, settings: Settings, *, prune_only: bool = False) -> Summary:
    """One full pass over every served instance, then garbage collection."""
    observed = await observe(kube, settings, await owned_resources(kube, settings))
    if not prune_only:
        await prepare(kube, observed.sealing, settings.key_namespace, create=not settings.dry_run)
    summary = Summary()
    wanted: Wanted = {}
    gate = asyncio.Semaphore(settings.concurrency)

    async def one(key: Key, instance: Manifest) -> None:
        async with gate:
            if prune_only:
                result, want = (
                    InstanceResult(instance_ref(instance)),
                    _wanted_only(observed, instance, settings),
                )
            else:
                result, want = await reconcile_instance(kube, observed, instance, settings)
                if not settings.dry_run and any(o.action == "recreating" for o in result.outcomes):
                    result, want = await _finish_recreates(
                        kube, observed, instance, settings, result
                    )
            wanted[key] = want
            summary.instances.append(result)

    await asyncio.gather(*(one(k, i) for k, i in observed.instances.items()))
    summary.instances.sort(key=lambda r: (r.instance.namespace, r.instance.name))
    candidates = plan_prune(observed, wanted)
    summary.kept = [c for c in candidates if not c.allowed]
    try:
        summary.pruned = await prune(
            kube, candidates, dry_run=settings.dry_run, concurrency=settings.gc_concurrency
        )
    except ApiError as err:
        summary.prune_error = str(err)
    if not settings.dry_run:
        await events.record_pruned(kube, summary.pruned, observed.instances)
    return summary


def _wanted_only(observed: Observed, instance: Manifest, settings: Settings) -> set | None:
    """For `gc` alone: what the instance wants, rendered but not applied."""
    try:
        rendered = validated_render(resolve_template(observed, instance, settings), instance)
    except JupyternetesError:
        return None
    return {identity(i.manifest) for i in rendered.items}
