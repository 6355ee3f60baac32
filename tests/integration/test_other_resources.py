"""otherResources and item conditions through the real pipeline: apply, status, prune, allow."""

from __future__ import annotations

import pytest
from reconcile_helpers import (
    actions,
    condition,
    once,
    owned,
    put,
    result_for,
    seed_instance,
    seed_template,
    status_of,
)

from jupyternetes_ssa import FIELD_MANAGER
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube, Resource
from jupyternetes_ssa.local_cluster import wait_for

pytestmark = pytest.mark.integration
SERVICE = Resource("v1", "Service", "services")
CONFIGMAP = Resource("v1", "ConfigMap", "configmaps")
NETPOL = Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
ALLOWED = ("Service", "ConfigMap", "NetworkPolicy.networking.k8s.io")


def with_others(namespace: str) -> dict:
    """The seed template plus a Service for the pod, a mounted ConfigMap and a NetworkPolicy."""
    template = seed_template(namespace)
    selector = {
        "jupyternetes.kadense.io/instance": "{jupyternetes.instance.name}",
        "jupyternetes.kadense.io/podName": "notebook",
    }
    template["spec"]["otherResources"] = [
        {
            "name": "svc",
            "apiVersion": "v1",
            "kind": "Service",
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 8888}]},
        },
        {
            "name": "settings",
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "data": {"user": "{jupyterhub.user.name}", "shell": "echo ${{HOME}}"},
        },
        {
            "name": "isolate",
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "spec": {
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"component": "hub"}}}]}],
            },
        },
    ]
    pod = template["spec"]["pods"][0]["spec"]
    pod["volumes"].append(
        {"name": "settings", "configMap": {"name": "{jupyternetes.other.settings}"}}
    )
    return template


async def test_other_resources_are_applied_owned_reported_and_steady(kube: Kube, namespace: str):
    await put(kube, with_others(namespace))
    instance = await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace, allow_kinds=ALLOWED)

    assert summary.ok, summary
    assert actions(summary, "jovyan") == {"created": 5}
    svc = await kube.get(SERVICE, namespace, "jovyan-svc")
    cm = await kube.get(CONFIGMAP, namespace, "jovyan-settings")
    netpol = await kube.get(NETPOL, namespace, "jovyan-isolate")
    assert svc["spec"]["selector"]["jupyternetes.kadense.io/instance"] == "jovyan"
    assert cm["data"] == {"user": "jovyan", "shell": "echo ${HOME}"}
    assert netpol["spec"]["podSelector"]["matchLabels"]["jupyternetes.kadense.io/podName"] == (
        "notebook"
    )
    for obj in (svc, cm, netpol):
        assert obj["metadata"]["ownerReferences"][0]["uid"] == instance["metadata"]["uid"]
        assert FIELD_MANAGER in {m["manager"] for m in obj["metadata"]["managedFields"]}
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert {
        "name": "settings",
        "configMap": {"name": "jovyan-settings", "defaultMode": 420},
    } in pod["spec"]["volumes"]
    status = await status_of(kube, namespace, "jovyan")
    assert status["otherResourcesProvisioned"] == "Completed"
    assert status["otherResources"]["svc"] == {"resourceName": "jovyan-svc", "state": "Processed"}

    again = await once(kube, namespace, allow_kinds=ALLOWED)

    assert actions(again, "jovyan") == {"unchanged": 5}


async def test_an_other_resource_removed_from_the_template_is_pruned(kube: Kube, namespace: str):
    template = with_others(namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))
    assert (await once(kube, namespace, allow_kinds=ALLOWED)).ok

    template["spec"]["otherResources"] = [
        o for o in template["spec"]["otherResources"] if o["name"] != "isolate"
    ]
    await put(kube, template)
    summary = await once(kube, namespace, allow_kinds=ALLOWED)

    assert [c.ref.name for c in summary.pruned] == ["jovyan-isolate"]
    assert await kube.get(NETPOL, namespace, "jovyan-isolate") is None
    assert "isolate" not in (await status_of(kube, namespace, "jovyan"))["otherResources"]


async def test_a_kind_outside_the_allow_list_is_refused_and_nothing_is_applied(
    kube: Kube, namespace: str
):
    await put(kube, with_others(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace, allow_kinds=("Service", "ConfigMap"))

    result = result_for(summary, "jovyan")
    assert result.reason == "KindNotAllowed"
    degraded = condition(await status_of(kube, namespace, "jovyan"), "Degraded")
    assert "--allow-kind NetworkPolicy.networking.k8s.io" in degraded["message"]
    assert "otherResources[isolate].kind" in degraded["message"]
    assert await owned(kube, namespace, "jovyan") == ([], [])
    assert await kube.get(SERVICE, namespace, "jovyan-svc") is None


async def test_item_conditions_follow_the_instances_variables(kube: Kube, namespace: str):
    template = seed_template(namespace)
    template["spec"]["pvcs"].append(
        {
            "name": "scratch",
            "deletionPolicy": "Delete",
            "condition": {"variable": "profile", "in": ["gpu", "gpu-large"]},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    template["spec"]["pods"].append(
        {
            "name": "gpu-monitor",
            "condition": {"variable": "profile", "equals": "gpu"},
            "spec": {"containers": [{"name": "monitor", "image": "busybox:1.36"}]},
        }
    )
    await put(kube, template)
    await put(kube, seed_instance(namespace, "gpu-user", profile="gpu"))
    await put(kube, seed_instance(namespace, "cpu-user", profile="cpu"))

    assert (await once(kube, namespace)).ok

    assert await kube.get(PVC, namespace, "gpu-user-scratch") is not None
    assert await kube.get(POD, namespace, "gpu-user-gpu-monitor") is not None
    assert await kube.get(PVC, namespace, "cpu-user-scratch") is None
    assert await kube.get(POD, namespace, "cpu-user-gpu-monitor") is None

    await wait_for(
        lambda: _bound(kube, namespace, "gpu-user-scratch"),
        timeout=30,
        message="the scratch PVC settles (bound)",
    )
    switched = seed_instance(namespace, "gpu-user", profile="cpu")
    await put(kube, switched)
    summary = await once(kube, namespace)

    assert {c.ref.name for c in summary.pruned} == {"gpu-user-scratch", "gpu-user-gpu-monitor"}
    assert all("condition" in c.reason for c in summary.pruned)
    live = await kube.get(INSTANCE, namespace, "gpu-user")
    assert set(live["status"]["pvcs"]) == {"workspace"}


async def _bound(kube: Kube, ns: str, name: str) -> bool:
    pvc = await kube.get(PVC, ns, name)
    return bool(pvc) and pvc.get("status", {}).get("phase") == "Bound"
