"""Hostile review of "an owner record counts only on an object our field manager wrote":
forgeries a user with create rights on PVCs in the namespace can make with one request, and a
legitimate object that Kubernetes and an admin touched after us. Against the real apiserver."""

from __future__ import annotations

import copy
import uuid

import pytest
from reconcile_helpers import once, put, result_for, seed_instance, seed_template, status_of

from jupyternetes_ssa import FIELD_MANAGER
from jupyternetes_ssa.kube import POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.ownership import OWNER
from jupyternetes_ssa.spawner import _exit_status

pytestmark = pytest.mark.integration

# Neither a plain POST nor a server-side apply lets RBAC restrict the `fieldManager` a client
# names: it is a free-form query parameter. managedFields record the name, not who wrote it.
FORGEABLE = (
    "the proof is a managedFields entry whose manager is named `jupyternetes-ssa`, and any "
    "client with create rights on PVCs may name that manager (`kubectl create "
    "--field-manager=jupyternetes-ssa`, or `kubectl apply --server-side "
    "--field-manager=jupyternetes-ssa`); RBAC cannot restrict the name, so the forged record "
    "(this instance, any made-up uid) is taken as an earlier incarnation's and the PVC applied "
    "to and mounted. Needs an unforgeable proof (e.g. a ValidatingAdmissionPolicy refusing "
    "fieldManager=jupyternetes-ssa from anyone but the reconciler's ServiceAccount, or an "
    "HMAC of the object's server-assigned uid with the reconciler's key)"
)


async def _item(kube: Kube, namespace: str, section: str = "pvcs") -> dict:
    """The object the instance `alice` would get (a dry run: nothing is written)."""
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "alice"))
    summary = await once(kube, namespace, dry_run=True)
    outcome = next(o for o in result_for(summary, "alice").outcomes if o.item.section == section)
    return copy.deepcopy(outcome.item.manifest)


def _forged(pvc: dict, namespace: str) -> dict:
    """Our labels (as rendered) and a record naming alice with a made-up uid."""
    pvc["metadata"].setdefault("annotations", {})[OWNER] = f"{namespace}/alice/{uuid.uuid4()}"
    pvc["metadata"].pop("ownerReferences", None)
    return pvc


async def _assert_refused(kube: Kube, namespace: str, forged: dict, section="pvcs") -> None:
    summary = await once(kube, namespace)
    outcome = next(o for o in result_for(summary, "alice").outcomes if o.item.section == section)
    live = await kube.get(PVC if section == "pvcs" else POD, namespace, forged["metadata"]["name"])
    recorded = (live["metadata"].get("annotations") or {}).get(OWNER)
    assert recorded == (forged["metadata"].get("annotations") or {}).get(OWNER), (
        "the forged object was applied to: its owner record was rewritten to alice's"
    )
    assert (outcome.action, outcome.reason) == ("failed", "NameConflict"), outcome


@pytest.mark.xfail(strict=True, reason=FORGEABLE)
async def test_a_pvc_posted_under_our_field_manager_name_is_not_ours(kube: Kube, namespace: str):
    """`kubectl create -f pvc.yaml --field-manager=jupyternetes-ssa`: an Update entry."""
    forged = _forged(await _item(kube, namespace), namespace)
    await kube.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        body=forged,
        params={"fieldManager": FIELD_MANAGER},
    )
    await _assert_refused(kube, namespace, forged)


@pytest.mark.xfail(strict=True, reason=FORGEABLE)
async def test_a_pvc_applied_under_our_field_manager_name_is_not_ours(kube: Kube, namespace: str):
    """`kubectl apply --server-side --field-manager=jupyternetes-ssa`: an Apply entry, the same
    as ours."""
    forged = _forged(await _item(kube, namespace), namespace)
    await kube.apply(forged, field_manager=FIELD_MANAGER)
    await _assert_refused(kube, namespace, forged)


@pytest.mark.xfail(
    strict=True,
    reason="a pod POSTed with --field-manager=jupyternetes-ssa and a record naming alice (any "
    "uid) is taken as an earlier incarnation's: kept running with the attacker's image and its "
    "podAddress published in alice's status for the hub. " + FORGEABLE,
)
async def test_a_forged_pod_under_our_field_manager_name_is_not_served(kube: Kube, namespace: str):
    """The worst case: a pod of the attacker's image, made before alice's server starts, with a
    record naming alice. Taken as an earlier incarnation's, it is kept (its spec change waits for
    a restart) and its address reported in alice's status: the hub would send alice there."""
    forged = _forged(await _item(kube, namespace, "pods"), namespace)
    for container in forged["spec"]["containers"]:
        container["image"] = "attacker.example/notebook:evil"
    await kube.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        body=forged,
        params={"fieldManager": FIELD_MANAGER},
    )
    name = forged["metadata"]["name"]
    await once(kube, namespace)  # creates the PVC the pod waits for; judges the pod
    await wait_for(
        lambda: _pod_ip(kube, namespace, name), timeout=180, message=f"pod {name} has an IP"
    )
    await once(kube, namespace)
    entry = (await status_of(kube, namespace, "alice")).get("pods", {}).get("notebook", {})
    assert "podAddress" not in entry, f"alice's status sends the hub to the forged pod: {entry}"
    await _assert_refused(kube, namespace, forged, "pods")


async def _pod_ip(kube: Kube, namespace: str, name: str) -> str | None:
    pod = await kube.get(POD, namespace, name)
    return ((pod or {}).get("status") or {}).get("podIP")


@pytest.mark.xfail(strict=True, reason=FORGEABLE)
async def test_a_recordless_pvc_under_our_field_manager_name_is_not_ours(
    kube: Kube, namespace: str
):
    """No record at all, only our labels and the manager's name: taken for an object of a
    release before owner records (_legacy_of), applied to without even a resourceVersion
    guard."""
    forged = await _item(kube, namespace)
    forged["metadata"].pop("ownerReferences", None)
    await kube.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        body=forged,
        params={"fieldManager": FIELD_MANAGER},
    )
    await _assert_refused(kube, namespace, forged)


async def test_our_pvc_touched_by_an_admin_and_kubernetes_stays_ours(kube: Kube, namespace: str):
    """Legitimate: we created it, an admin labelled it (kubectl label: another manager's Update)
    and annotated it through the main resource; the next pass still owns and keeps it."""
    name = (await _item(kube, namespace))["metadata"]["name"]
    first = await once(kube, namespace)
    assert result_for(first, "alice").error == ""
    path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
    await kube.call(
        "PATCH",
        path,
        body={"metadata": {"labels": {"backup": "nightly"}, "annotations": {"note": "x"}}},
        params={"fieldManager": "kubectl-label"},
        content_type="application/merge-patch+json",
    )
    second = await once(kube, namespace)
    result = result_for(second, "alice")
    assert result.error == "", result.error
    assert all(o.action != "failed" for o in result.outcomes)
    live = await kube.get(PVC, namespace, name)
    assert live["metadata"]["labels"]["backup"] == "nightly"
    assert live["metadata"]["annotations"][OWNER].startswith(f"{namespace}/alice/")


async def test_a_running_server_whose_managed_fields_were_cleared_is_not_stopped(
    kube: Kube, namespace: str
):
    name = (await _item(kube, namespace, "pods"))["metadata"]["name"]
    await once(kube, namespace)
    await wait_for(
        lambda: _pod_ip(kube, namespace, name), timeout=180, message=f"pod {name} has an IP"
    )
    await once(kube, namespace)
    await kube.call(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{name}",
        body={"metadata": {"managedFields": [{}]}},
        content_type="application/merge-patch+json",
    )
    cleared = await kube.get(POD, namespace, name)
    assert not any(
        m.get("manager") == FIELD_MANAGER for m in cleared["metadata"].get("managedFields") or []
    )
    await once(kube, namespace)
    status = await status_of(kube, namespace, "alice")
    entry = status.get("pods", {}).get("notebook", {})
    assert _exit_status(status, entry) is None, f"the hub would stop a running server: {entry}"
