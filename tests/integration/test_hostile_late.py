"""Hostile review of the late scale changes: claim sizes, remembered refusals, zero values in
diff, the paused cycle collector, paged lists. Real apiserver; FlakyApi (faults.py) only to inject
statuses the real one cannot be asked for (a 403 mid-list, a 410 on a continue token)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import weakref

import pytest
from faults import FlakyApi
from reconcile_helpers import (
    edited,
    once,
    owned,
    put,
    result_for,
    seed_instance,
    seed_template,
)

from jupyternetes_ssa import observe
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.diff import drift
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, ApiError, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.settings import Settings

NEVER_SHRINKS = "never shrinks"


def _size(template: dict, size: str) -> dict:
    def change(t: dict) -> None:
        t["spec"]["pvcs"][0]["spec"]["resources"]["requests"]["storage"] = size

    return edited(template, change)


def _claim_outcome(summary, name: str = "alice"):
    return next(o for o in result_for(summary, name).outcomes if o.item.section == "pvcs")


async def _claim(kube: Kube, namespace: str, name: str = "alice") -> dict:
    _, pvcs = await owned(kube, namespace, name)
    assert len(pvcs) == 1, pvcs
    return pvcs[0]


# 1. Claim sizes --------------------------------------------------------------------------------


def _fast_controller(kube, namespace: str):
    """A Controller over `namespace` that re-watches every second and resyncs every 2 s."""
    settings = Settings(
        namespaces=(namespace,),
        key_namespace=namespace,
        health_port=0,
        watch_timeout_seconds=1,
        resync_seconds=2,
    )
    controller, stop = Controller(kube, settings), asyncio.Event()
    return controller, stop, asyncio.create_task(controller.run(stop))


async def test_claim_lowered_template_kept_then_raised_then_lowered(cluster, namespace):
    """Template 2Gi -> 1Gi: the claim keeps 2Gi, reported pending, no write once settled.
    Template -> 3Gi (past the claim): grown. Template back to 2Gi: keeps 3Gi, pending."""
    kube = cluster.kube
    template = _size(seed_template(namespace), "2Gi")
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    await once(kube, namespace)
    assert (await _claim(kube, namespace))["spec"]["resources"]["requests"]["storage"] == "2Gi"

    await put(kube, _size(template, "1Gi"))
    await once(kube, namespace)
    before = await _claim(kube, namespace)
    settled = _claim_outcome(await once(kube, namespace))
    after = await _claim(kube, namespace)
    assert settled.action == "pending" and NEVER_SHRINKS in settled.message, settled
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["resources"]["requests"]["storage"] == "2Gi"

    await put(kube, _size(template, "3Gi"))
    raised = _claim_outcome(await once(kube, namespace))
    assert raised.action == "configured", raised
    assert (await _claim(kube, namespace))["spec"]["resources"]["requests"]["storage"] == "3Gi"

    await put(kube, _size(template, "2Gi"))
    await once(kube, namespace)
    lowered = _claim_outcome(await once(kube, namespace))
    assert lowered.action == "pending" and NEVER_SHRINKS in lowered.message, lowered
    assert (await _claim(kube, namespace))["spec"]["resources"]["requests"]["storage"] == "3Gi"


async def _bound(kube: Kube, namespace: str) -> None:
    """Only a bound claim may be resized."""

    async def bound() -> bool:
        claim = await _claim(kube, namespace)
        return (claim.get("status") or {}).get("phase") == "Bound"

    await wait_for(bound, timeout=120, message="the claim bound")


async def _admin_resize(kube: Kube, claim: dict, size: str, manager: str = "admin") -> None:
    meta = claim["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"resources": {"requests": {"storage": size}}},
    }
    await kube.apply(body, field_manager=manager)


async def test_admin_resize_kept_without_writes_then_template_grows_past_it(cluster, namespace):
    """An admin grows the claim (server-side apply, force: the storage field is theirs now).
    We keep it without a write, report it pending; a template that then asks for more than the
    admin's size grows the claim; a pass later nothing is pending."""
    kube = cluster.kube
    template = seed_template(namespace)  # 1Gi
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    await once(kube, namespace)
    await _bound(kube, namespace)
    await _admin_resize(kube, await _claim(kube, namespace), "2Gi")
    before = await _claim(kube, namespace)
    for _ in range(2):
        kept = _claim_outcome(await once(kube, namespace))
        assert kept.action == "pending" and NEVER_SHRINKS in kept.message, kept
    after = await _claim(kube, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["resources"]["requests"]["storage"] == "2Gi"

    await put(kube, _size(template, "3Gi"))
    await once(kube, namespace)
    assert (await _claim(kube, namespace))["spec"]["resources"]["requests"]["storage"] == "3Gi"
    settled = _claim_outcome(await once(kube, namespace))
    assert settled.action == "unchanged", settled


async def test_admin_resize_in_other_units_is_not_a_shrink(cluster, namespace):
    """An admin rewrites 1Gi as 1024Mi (the same size): nothing to keep, nothing pending."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "alice"))
    await once(kube, namespace)
    await _bound(kube, namespace)
    await _admin_resize(kube, await _claim(kube, namespace), "1024Mi")
    outcome = _claim_outcome(await once(kube, namespace))
    assert outcome.action in ("unchanged", "configured"), outcome
    again = _claim_outcome(await once(kube, namespace))
    assert again.action == "unchanged", again


@pytest.mark.parametrize("same", ["1073741824", "1024Mi", "1048576Ki"])
async def test_claim_same_size_other_unit_converges(cluster, namespace, same):
    """1Gi rewritten as the same quantity in other units: not a shrink, not pending, and the
    second pass costs no write."""
    kube = cluster.kube
    template = seed_template(namespace)  # 1Gi
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    await once(kube, namespace)
    await put(kube, _size(template, same))
    first = _claim_outcome(await once(kube, namespace))
    assert first.action in ("configured", "unchanged"), first
    before = await _claim(kube, namespace)
    second = _claim_outcome(await once(kube, namespace))
    assert second.action == "unchanged", second
    after = await _claim(kube, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_claim_smaller_template_on_new_instance_gets_template_size(cluster, namespace):
    """The kept size is per claim: a new server's claim is made at the lowered template size."""
    kube = cluster.kube
    template = _size(seed_template(namespace), "2Gi")
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    await once(kube, namespace)
    await put(kube, _size(template, "1Gi"))
    await put(kube, seed_instance(namespace, "bob"))
    summary = await once(kube, namespace)
    assert _claim_outcome(summary, "bob").action == "created"
    bob = await _claim(kube, namespace, "bob")
    assert bob["spec"]["resources"]["requests"]["storage"] == "1Gi"


# 4. diff: zero and empty values ---------------------------------------------------------------


async def _configmap(kube: Kube, namespace: str, data: dict) -> dict:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": namespace},
        "data": data,
    }
    return await kube.apply(body, field_manager="jupyternetes-ssa")


async def test_configmap_value_zero_string_is_not_empty(cluster, namespace):
    """A ConfigMap value "0" deleted by an admin's update is drift (a string, not Go's 0)."""
    kube = cluster.kube
    desired = {"data": {"COUNT": "0", "KEEP": "x"}}
    live = await _configmap(kube, namespace, desired["data"])
    live["data"].pop("COUNT")
    path = f"/api/v1/namespaces/{namespace}/configmaps/cm"
    updated = await kube.call("PUT", path, body=live)
    assert "COUNT" not in updated["data"]
    assert drift(desired, updated) == ["data.COUNT"]


async def test_configmap_empty_value_removed_by_admin_is_drift(cluster, namespace):
    """Was a bug: a ConfigMap value "" is stored as "" (the apiserver does not omit it), so a key an
    admin removed by update is missing, not "omitted empty": drift must see it. diff treats
    every "" (and 0, false) as what the apiserver omits, in any kind, so the key is never put
    back while the hash annotation stays."""
    kube = cluster.kube
    desired = {"data": {"FLAG": "", "KEEP": "x"}}
    live = await _configmap(kube, namespace, desired["data"])
    assert live["data"]["FLAG"] == ""  # kept as sent: not omitted
    live["data"].pop("FLAG")
    path = f"/api/v1/namespaces/{namespace}/configmaps/cm"
    updated = await kube.call("PUT", path, body=live)
    assert "FLAG" not in updated["data"]
    assert drift(desired, updated) == ["data.FLAG"]


# 5. The paused cycle collector -----------------------------------------------------------------


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_list_does_not_freeze_unrelated_cyclic_garbage(cluster, namespace):
    """Was a bug: gc.freeze() after a list moves EVERY tracked object into the permanent generation,
    not only what the list cached: an exception's traceback, a finished task, anything in a
    reference cycle alive at that moment is never collected once dropped. In continuous mode
    every re-list freezes more: memory grows for ever."""
    kube = cluster.kube
    cycle = _Cycle()
    alive = weakref.ref(cycle)
    try:
        await observe._list_all(kube, PVC, (namespace,))
        del cycle
        gc.collect()
        assert alive() is None, "a cyclic object alive during a list is never collected"
    finally:
        gc.unfreeze()


class _InNamespace(FlakyApi):
    """FAULT INJECTION: the next list of one namespace answered 403 (RBAC cannot be revoked
    half-way through one list call)."""

    def _hit(self, kwargs: dict) -> bool:
        return bool(self.statuses) and kwargs.get("namespace") == self.url_part


async def test_collector_enabled_again_after_list_fails(cluster, namespace):
    """A list that fails half-way (a 403 on one namespace while another lists) leaves the
    collector on and the nesting count at zero."""
    flaky = _InNamespace(cluster.api, [403], url_part=namespace)
    kube = Kube(flaky)
    assert gc.isenabled()
    try:
        with pytest.raises(ApiError):
            await observe._list_all(kube, PVC, (namespace, "default"))
        await asyncio.gather(
            observe._list_all(cluster.kube, PVC, ("default",)),
            observe._list_all(cluster.kube, PVC, ("kube-system",)),
        )
    finally:
        gc.unfreeze()
    assert flaky.injected == 1
    assert gc.isenabled()
    assert observe._lists_running == 0


# 7. Pages of 250 --------------------------------------------------------------------------------


class _ExpiredContinue(FlakyApi):
    """FAULT INJECTION: a 410 Gone on the next request carrying a continue token (the real
    apiserver answers so once the token's resourceVersion is compacted, which cannot be forced
    on demand here). Everything else goes to the real apiserver."""

    def _hit(self, kwargs: dict) -> bool:
        return bool(self.statuses) and "continue" in (kwargs.get("params") or {})


async def _many_configmaps(kube: Kube, namespace: str, count: int) -> None:
    gate = asyncio.Semaphore(10)

    async def one(index: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"many-{index:04d}", "namespace": namespace},
            "data": {"i": str(index)},
        }
        async with gate:
            await kube.apply(body, field_manager="test-admin")

    await asyncio.gather(*(one(i) for i in range(count)))


async def test_more_than_a_page_listed_whole_and_410_midway_is_no_half_list(cluster, namespace):
    kube = cluster.kube
    await _many_configmaps(kube, namespace, 260)
    res = await kube.resource("v1", "ConfigMap")
    whole = await kube.list(res, namespace, label_selector=None)
    names = {o["metadata"]["name"] for o in whole.items}
    assert len([n for n in names if n.startswith("many-")]) == 260
    flaky = _ExpiredContinue(cluster.api, [410])
    with pytest.raises(ApiError) as err:
        await Kube(flaky).list(res, namespace)
    assert err.value.status == 410 and flaky.injected == 1


# 2. Refusals remembered in continuous mode ----------------------------------------------------


def _access_modes(template: dict, modes: list[str]) -> dict:
    def change(t: dict) -> None:
        t["spec"]["pvcs"][0]["spec"]["accessModes"] = modes

    return edited(template, change)


async def test_remembered_refusal_forgotten_with_its_object(cluster, namespace):
    """A refused claim change (accessModes are immutable) is remembered in the controller's
    Observed.refused. The template is fixed back, then the instance is deleted and collected.
    Was a bug (memory growth): the entry was dropped only when the same object was applied
    again, so an entry outlived its object (pinning its manifest and live object): every
    refused server that went away left one behind for the life of the process."""
    kube = cluster.kube
    template = seed_template(namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    controller, stop, task = _fast_controller(kube, namespace)
    try:
        await wait_for(
            lambda: _count(owned(kube, namespace, "alice")), timeout=120, message="objects made"
        )
        await put(kube, _access_modes(template, ["ReadWriteMany"]))
        await wait_for(
            lambda: bool(controller.observed.refused), timeout=120, message="refusal remembered"
        )
        await put(kube, template)  # fixed back: converges, nothing more to refuse
        await kube.delete(INSTANCE, namespace, "alice")

        async def pod_gone() -> bool:
            pods, _ = await owned(kube, namespace, "alice")
            return not pods

        await wait_for(pod_gone, timeout=120, message="the deleted server's pod collected")
        assert not controller.observed.refused, controller.observed.refused.keys()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def _count(pair) -> bool:
    pods, pvcs = await pair
    return bool(pods) and bool(pvcs)


# 6. GC under a 429/5xx storm -------------------------------------------------------------------


class _DeleteStorm(FlakyApi):
    """FAULT INJECTION: the next DELETEs answered 429/503 (an overloaded apiserver, which
    cannot be caused on demand); every other call goes to the real apiserver."""

    @contextlib.asynccontextmanager
    async def call_api(self, method: str = "GET", **kwargs):
        if method != "DELETE":
            async with self.api.call_api(method, **kwargs) as response:
                yield response
            return
        async with super().call_api(method, **kwargs) as response:
            yield response


async def test_gc_storm_deletes_only_our_orphans_and_no_claim(cluster, namespace):
    """Twelve servers deleted at once; their collection meets 429s and 503s. Every orphan pod
    goes (after retries or a later pass), no claim (Retain), and a bystander pod and claim an
    admin made with look-alike labels stay."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    names = [f"u{i:02d}" for i in range(12)]
    for name in names:
        await put(kube, seed_instance(namespace, name))
    await once(kube, namespace)
    bystander = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "bystander",
            "namespace": namespace,
            "labels": {"jupyternetes.kadense.io/instance": "u00"},
        },
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    await put(kube, bystander)
    # Kubernetes' own collector would take the pods first (ownerReferences): an admin's
    # "orphan" edit leaves them to ours.
    for pod in (await kube.list(POD, namespace)).items:
        if pod["metadata"].get("ownerReferences"):
            await kube.call(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}",
                body={"metadata": {"ownerReferences": None}},
                content_type="application/merge-patch+json",
            )
    for name in names:
        await kube.delete(INSTANCE, namespace, name)
    storm = _DeleteStorm(cluster.api, [429, 503, 429, 503, 500, 429] * 4)
    stormy = Kube(storm)

    async def all_collected() -> bool:
        await once(stormy, namespace, gc_concurrency=5)
        pods = await kube.list(POD, namespace)
        return {p["metadata"]["name"] for p in pods.items} == {"bystander"}

    await wait_for(all_collected, timeout=300, message="orphans collected through the storm")
    assert storm.injected > 0
    pvcs = await kube.list(PVC, namespace)
    assert len(pvcs.items) == len(names)


# 3. Adopted pods under OnRestart; 1. an adopted claim larger than the template ---------------


def _adopting(template: dict) -> dict:
    def change(t: dict) -> None:
        t["spec"]["pods"][0]["adopt"] = True
        t["spec"]["pvcs"][0]["adopt"] = True

    return edited(template, change)


def _pod_outcome(summary, name: str = "alice"):
    return next(o for o in result_for(summary, name).outcomes if o.item.section == "pods")


async def _pod(kube: Kube, namespace: str, name: str = "alice-notebook") -> dict:
    return await kube.get(POD, namespace, name)


async def test_adopted_pod_metadata_then_template_change_then_recreated(cluster, namespace):
    """kubespawner's running pod is adopted (its claim is new, ours). The pod gets our labels
    (its own userId label, held by the other manager, becomes ours; its other labels stay), its
    spec waits, and the next pass writes nothing. A template label change reaches the pod
    without a restart. Deleted by the admin, the pod is made again by us with the template's
    spec, and then stays unchanged."""
    kube = cluster.kube
    template = _adopting(seed_template(namespace))
    await put(kube, template)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "alice-notebook",
            "namespace": namespace,
            "labels": {"jupyternetes.kadense.io/userId": "someone", "app": "kubespawner"},
        },
        "spec": {
            "containers": [{"name": "notebook", "image": "old-image"}],
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "alice-workspace"}}
            ],
        },
    }
    original = await kube.apply(pod, field_manager="kubespawner")
    await put(kube, seed_instance(namespace, "alice"))

    async def adopted_once():
        # the pod's status moves (the kubelet), and adoption is guarded by its resourceVersion:
        # a pass may lose the race and retry
        summary = await once(kube, namespace)
        return summary if _pod_outcome(summary).action != "failed" else None

    first = await wait_for(adopted_once, timeout=120, message="the pod adopted")
    assert _pod_outcome(first).action == "waiting", _pod_outcome(first)
    adopted = await _pod(kube, namespace)
    assert adopted["metadata"]["uid"] == original["metadata"]["uid"]
    tags = adopted["metadata"]["labels"]
    assert tags["app"] == "kubespawner" and tags["jupyternetes.kadense.io/userId"] != "someone"
    assert tags.get("jupyternetes.kadense.io/instance") == "alice", tags
    assert adopted["spec"]["containers"][0]["image"] == "old-image"

    writes = _pod_writes(cluster, namespace)
    assert writes >= 2  # kubespawner's create and our adoption: the counter counts
    second = await once(kube, namespace)
    assert _pod_outcome(second).action == "waiting"
    assert _pod_writes(cluster, namespace) == writes, "the adopted pod written again"

    def label(t: dict) -> None:
        t["spec"]["pods"][0]["labels"]["extra"] = "1"

    await put(kube, edited(template, label))
    await once(kube, namespace)
    relabelled = await _pod(kube, namespace)
    assert relabelled["metadata"]["labels"].get("extra") == "1"
    assert relabelled["metadata"]["uid"] == original["metadata"]["uid"]
    await once(kube, namespace)
    assert (await _pod(kube, namespace))["metadata"]["resourceVersion"] == relabelled["metadata"][
        "resourceVersion"
    ]

    await kube.delete(POD, namespace, "alice-notebook", grace_seconds=0)
    await wait_for(
        lambda: _absent(kube, namespace, original["metadata"]["uid"]),
        timeout=120,
        message="the adopted pod gone",
    )
    remade = _pod_outcome(await once(kube, namespace))
    assert remade.action == "created", remade
    fresh = await _pod(kube, namespace)
    assert (
        fresh["spec"]["containers"][0]["image"] == "quay.io/jupyter/datascience-notebook:hub-5.2.1"
    )
    again = _pod_outcome(await once(kube, namespace))
    assert again.action == "unchanged", again


def _pod_writes(cluster, namespace: str, name: str = "alice-notebook") -> int:
    """Writes (not dry runs, not the kubelet's status) to one pod, read off the audit log."""
    count = 0
    for line in cluster.local.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if (
            event.get("stage") == "ResponseComplete"
            and event.get("verb") in ("patch", "update", "create")
            and ref.get("resource") == "pods"
            and ref.get("namespace") == namespace
            and ref.get("name") == name
            and not ref.get("subresource")
            and "dryRun" not in event.get("requestURI", "")
        ):
            count += 1
    return count


async def _absent(kube: Kube, namespace: str, uid: str) -> bool:
    pod = await _pod(kube, namespace)
    return pod is None or pod["metadata"]["uid"] != uid


def _kubespawner_claim(namespace: str, size: str = "5Gi") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "alice-workspace", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


async def test_adopted_claim_larger_than_template_kept_without_writes(cluster, namespace):
    """kubespawner's 5Gi claim adopted by a 1Gi template: kept at 5Gi, pending, no write."""
    kube = cluster.kube
    await put(kube, _adopting(seed_template(namespace)))
    await kube.apply(_kubespawner_claim(namespace), field_manager="kubespawner")
    await put(kube, seed_instance(namespace, "alice"))
    first = _claim_outcome(await once(kube, namespace))
    assert first.action in ("configured", "pending"), first
    before = await _claim(kube, namespace)
    second = _claim_outcome(await once(kube, namespace))
    assert second.action == "pending" and NEVER_SHRINKS in second.message, second
    after = await _claim(kube, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert after["metadata"]["annotations"].get("jupyternetes-ssa.kadense.io/adopted") == "true"


async def test_adopting_running_pod_and_its_claim_together_converges(cluster, namespace):
    """Was a bug: a migration where kubespawner's claim AND its running pod both exist, both items
    `adopt: true`. Neither is in the label-selected caches, so both applies trip the create
    guard; apply_items re-reads only the items whose outcome was GuardTripped, but _create_all
    stopped at the claim and reported the pod merely "held back". The second attempt adopts
    nothing (the pod now trips, the claim is held back), and every later pass repeats it: the
    server is stuck failed ("changed under us; retrying") for ever."""
    kube = cluster.kube
    await put(kube, _adopting(seed_template(namespace)))
    await kube.apply(_kubespawner_claim(namespace, "1Gi"), field_manager="kubespawner")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "alice-notebook", "namespace": namespace},
        "spec": {
            "containers": [{"name": "notebook", "image": "old-image"}],
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "alice-workspace"}}
            ],
        },
    }
    await kube.apply(pod, field_manager="kubespawner")
    await put(kube, seed_instance(namespace, "alice"))

    async def adopted_both():
        summary = await once(kube, namespace)
        actions_ = {o.item.section: o.action for o in result_for(summary, "alice").outcomes}
        return "failed" not in actions_.values()

    await wait_for(adopted_both, timeout=60, message="the pod and its claim adopted")


# 4. Zero values in diff -----------------------------------------------------------------------


def _probe_delay(template: dict, seconds: int) -> dict:
    def change(t: dict) -> None:
        container = t["spec"]["pods"][0]["spec"]["containers"][0]
        container["readinessProbe"] = {
            "tcpSocket": {"port": 8888},
            "initialDelaySeconds": seconds,
        }

    return edited(template, change)


@pytest.mark.parametrize(("start", "end"), [(5, 0), (0, 5)])
async def test_probe_delay_to_and_from_zero_is_a_change(cluster, namespace, start, end):
    """initialDelaySeconds 5 -> 0 (and 0 -> 5) is a spec change: it waits for the pod's next
    start (OnRestart), and the re-created pod carries it; then nothing is left to do."""
    kube = cluster.kube
    template = _probe_delay(seed_template(namespace), start)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    await once(kube, namespace)
    first = await _pod(kube, namespace)
    await put(kube, _probe_delay(template, end))
    waiting = _pod_outcome(await once(kube, namespace))
    assert waiting.action == "waiting", waiting
    assert any("initialDelaySeconds" in f for f in waiting.fields), waiting.fields
    await kube.delete(POD, namespace, "alice-notebook", grace_seconds=0)
    await wait_for(
        lambda: _absent(kube, namespace, first["metadata"]["uid"]),
        timeout=120,
        message="the pod gone",
    )
    assert _pod_outcome(await once(kube, namespace)).action == "created"
    probe = (await _pod(kube, namespace))["spec"]["containers"][0]["readinessProbe"]
    assert probe.get("initialDelaySeconds", 0) == end
    settled = _pod_outcome(await once(kube, namespace))
    assert settled.action == "unchanged", settled


@pytest.mark.parametrize(("key", "value"), [("pods", 0), ("requests.storage", "0.5Gi")])
async def test_quota_quantities_read_back_canonical_are_no_drift(cluster, namespace, key, value):
    """Was a bug (a write every pass): an otherResource ResourceQuota's `hard` values are quantities
    the apiserver canonicalises (`pods: 0` -> "0", `0.5Gi` -> "512Mi"), but diff compares
    quantities only under `.resources.`/sizeLimit/overhead/divisor paths: `spec.hard.*` drifts
    for ever, so the quota is re-applied on every pass (the same for LimitRange values)."""
    kube = cluster.kube
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q", "namespace": namespace},
        "spec": {"hard": {key: value}},
    }
    live = await kube.apply(quota, field_manager="jupyternetes-ssa")
    assert drift({"spec": quota["spec"]}, live) == []


def _claim_label(template: dict, value: str) -> dict:
    def change(t: dict) -> None:
        t["spec"]["pvcs"][0]["labels"]["tier"] = value

    return edited(template, change)


async def test_refused_with_allowed_change_then_forbidden_part_dropped_converges(
    cluster, namespace
):
    """Continuous mode: a template change that both relabels the claim and changes its
    accessModes is refused whole (UpdatePending, the label not applied, SSA is all or
    nothing). An admin then edits the claim (a new resourceVersion: asked again, still
    refused). The template then drops the forbidden part: the label lands and nothing is
    reported pending."""
    kube = cluster.kube
    template = seed_template(namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    _, stop, task = _fast_controller(kube, namespace)

    async def claim_pending() -> bool:
        status = await status_of_instance(kube, namespace)
        return any("pvcs[workspace]" in c.get("message", "") for c in status)

    try:
        await wait_for(
            lambda: _count(owned(kube, namespace, "alice")), timeout=120, message="objects made"
        )
        both = _access_modes(_claim_label(template, "gold"), ["ReadWriteMany"])
        await put(kube, both)
        await wait_for(claim_pending, timeout=120, message="the refused claim reported")
        claim = await _claim(kube, namespace)
        assert "tier" not in claim["metadata"]["labels"]
        await kube.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim["metadata"]["name"],
                    "namespace": namespace,
                    "labels": {"admin": "touched"},
                },
            },
            field_manager="admin",
        )
        await put(kube, _claim_label(template, "gold"))

        async def converged() -> bool:
            labelled = (await _claim(kube, namespace))["metadata"]["labels"].get("tier")
            return labelled == "gold" and not await claim_pending()

        await wait_for(converged, timeout=120, message="the label applied, nothing pending")
        claim = await _claim(kube, namespace)
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["metadata"]["labels"]["admin"] == "touched"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def status_of_instance(kube: Kube, namespace: str) -> list[dict]:
    instance = await kube.get(INSTANCE, namespace, "alice")
    return ((instance or {}).get("status") or {}).get("conditions") or []
