"""The test cluster is real and complete: CRDs, SSA, GC, scheduling, a node, RBAC.

These pin down what the reconciler's own integration tests rely on, so a failure here points at
the cluster (local backend: jupyternetes_ssa.local_cluster), not at the reconciler.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import kr8s.asyncio
import pytest
import yaml
from kr8s import ServerError
from typer.testing import CliRunner

from jupyternetes_ssa.kube import ApiError
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.local_cluster.cli import app
from jupyternetes_ssa.local_cluster.crds import CRD_PATH, is_established
from jupyternetes_ssa.local_cluster.kube import request, status_code
from jupyternetes_ssa.local_cluster.runtime import FAIL_ANNOTATION

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KADENSE = "/apis/kadense.io/v1/namespaces"
IMAGE = "registry.k8s.io/pause:3.10"  # preloaded on kind nodes; never pulled by the fake node
APPLY = {"Content-Type": "application/apply-patch+yaml"}


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def pod_body(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {"containers": [{"name": "main", "image": IMAGE}]},
    }


async def get(api: Any, path: str) -> dict[str, Any] | None:
    return await request(api, "GET", path, ignore=(404,))


async def gone(api: Any, path: str) -> bool:
    return await get(api, path) is None


async def phase(api: Any, path: str, wanted: str) -> dict[str, Any] | None:
    pod = await get(api, path)
    return pod if pod and pod.get("status", {}).get("phase") == wanted else None


async def ssa(api: Any, namespace: str, url: str, body: dict[str, Any], manager: str, **params):
    """A server-side apply through kr8s's raw call_api; returns (HTTP status, object)."""
    async with api.call_api(
        "PATCH",
        version="v1",
        namespace=namespace,
        url=url,
        content=json.dumps(body),
        headers=APPLY,
        params={"fieldManager": manager, **params},
    ) as response:
        return response.status_code, response.json()


async def test_our_crds_are_established(cluster):
    for plural in ("jupyternotebookinstances", "jupyternotebooktemplates"):
        crd = await request(cluster.api, "GET", f"{CRD_PATH}/{plural}.kadense.io")
        assert is_established(crd)
        assert crd["spec"]["group"] == "kadense.io"


async def test_seed_template_and_instance_are_accepted_with_status(cluster, namespace):
    template = example("seed-template.yaml")
    template["metadata"]["namespace"] = namespace
    instance = example("seed-instance.yaml")
    instance["metadata"]["namespace"] = namespace
    instance["spec"]["template"]["namespace"] = namespace
    seed_status = instance.pop("status")

    base = f"{KADENSE}/{namespace}"
    created = await request(cluster.api, "POST", f"{base}/jupyternotebooktemplates", body=template)
    assert created["spec"] == template["spec"], "the schema pruned part of the seed template"
    created = await request(cluster.api, "POST", f"{base}/jupyternotebookinstances", body=instance)
    assert created["spec"] == instance["spec"]

    name = created["metadata"]["name"]
    written = await request(
        cluster.api,
        "PUT",
        f"{base}/jupyternotebookinstances/{name}/status",
        body={**created, "status": seed_status},
    )
    assert written["status"] == seed_status
    again = await request(cluster.api, "GET", f"{base}/jupyternotebookinstances/{name}")
    assert again["status"] == seed_status
    assert again["metadata"]["generation"] == 1, "a status write must not bump generation"


async def test_server_side_apply_records_the_field_manager(cluster, namespace):
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied"},
        "data": {"key": "one"},
    }
    code, obj = await ssa(cluster.api, namespace, "configmaps/applied", body, "x")
    assert code == 201
    assert ("x", "Apply") in {
        (m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]
    }

    code, _ = await ssa(cluster.api, namespace, "configmaps/applied", body, "x")
    assert code == 200

    other = copy.deepcopy(body)
    other["data"]["key"] = "two"
    with pytest.raises(ServerError) as conflict:
        await ssa(cluster.api, namespace, "configmaps/applied", other, "y")
    assert conflict.value.response.status_code == 409

    code, obj = await ssa(cluster.api, namespace, "configmaps/applied", other, "y", force="true")
    assert obj["data"]["key"] == "two"
    assert "y" in {m["manager"] for m in obj["metadata"]["managedFields"]}


async def _create_owner(api: Any, namespace: str, kind: str) -> tuple[dict[str, Any], str]:
    """An owner object of ``kind`` and its URL."""
    if kind == "ConfigMap":
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
        url = f"/api/v1/namespaces/{namespace}/configmaps"
    else:
        body = example("seed-instance.yaml")
        body.pop("status")
        body["metadata"] = {"name": "owner"}
        url = f"{KADENSE}/{namespace}/jupyternotebookinstances"
    owner = await request(api, "POST", url, body=body)
    return owner, f"{url}/owner"


@pytest.mark.parametrize("owner_kind", ["ConfigMap", "JupyterNotebookInstance"])
async def test_dependents_are_garbage_collected(cluster, namespace, owner_kind):
    owner, owner_url = await _create_owner(cluster.api, namespace, owner_kind)
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dependent", "ownerReferences": [reference]},
    }
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    await request(cluster.api, "POST", configmaps, body=dependent)

    await request(cluster.api, "DELETE", owner_url, body={"propagationPolicy": "Background"})
    await wait_for(
        lambda: gone(cluster.api, f"{configmaps}/dependent"),
        timeout=60,
        message="the garbage collector to delete the dependent",
    )


async def test_a_pod_runs_with_a_loopback_ip_and_deletion_completes(cluster, namespace):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    await request(cluster.api, "POST", pods, body=pod_body("runner"))
    pod = await wait_for(
        lambda: phase(cluster.api, f"{pods}/runner", "Running"), timeout=120, message="Running"
    )
    status = pod["status"]
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == ready["ContainersReady"] == ready["PodScheduled"] == "True"
    assert status["containerStatuses"][0]["ready"] is True
    assert pod["spec"]["nodeName"]
    if cluster.backend == "local":
        addresses = [status["podIP"], status["hostIP"]] + [p["ip"] for p in status["podIPs"]]
        assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
        assert status["podIP"] != status["hostIP"]

    await request(cluster.api, "DELETE", f"{pods}/runner")  # graceful: the node must finish it
    await wait_for(
        lambda: gone(cluster.api, f"{pods}/runner"), timeout=60, message="the pod to disappear"
    )


async def test_each_pod_gets_its_own_ip(cluster, namespace):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    names = ["a", "b", "c"]
    for name in names:
        await request(cluster.api, "POST", pods, body=pod_body(name))
    running = await asyncio.gather(
        *(
            wait_for(lambda n=n: phase(cluster.api, f"{pods}/{n}", "Running"), timeout=120)
            for n in names
        )
    )
    assert len({p["status"]["podIP"] for p in running}) == len(names)


async def test_the_fail_annotation_makes_a_pod_fail(cluster, namespace):
    if cluster.backend != "local":
        pytest.skip("the fail annotation is a feature of our fake node")
    pods = f"/api/v1/namespaces/{namespace}/pods"
    body = pod_body("doomed", annotations={FAIL_ANNOTATION: "boom"})
    await request(cluster.api, "POST", pods, body=body)
    pod = await wait_for(
        lambda: phase(cluster.api, f"{pods}/doomed", "Failed"), timeout=60, message="Failed"
    )
    assert pod["status"]["message"] == "boom"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


async def test_a_claim_is_provisioned_and_mounted(cluster, namespace):
    base = f"/api/v1/namespaces/{namespace}"
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    await request(cluster.api, "POST", f"{base}/persistentvolumeclaims", body=claim)
    pod = pod_body("mounter")
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    await request(cluster.api, "POST", f"{base}/pods", body=pod)
    await wait_for(
        lambda: phase(cluster.api, f"{base}/pods/mounter", "Running"),
        timeout=120,
        message="Running",
    )
    bound = await get(cluster.api, f"{base}/persistentvolumeclaims/data")
    assert bound["status"]["phase"] == "Bound"


async def test_a_narrow_service_account_gets_only_what_its_role_grants(
    cluster, namespace, sa_kubeconfig
):
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    narrow = await kr8s.asyncio.api(kubeconfig=str(await sa_kubeconfig(rules)))
    base = f"/api/v1/namespaces/{namespace}"

    listed = await request(narrow, "GET", f"{base}/configmaps")
    assert "items" in listed

    refused = [
        ("GET", f"{base}/secrets", None),
        ("GET", "/api/v1/namespaces/default/configmaps", None),
        (
            "POST",
            f"{base}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nope"}},
        ),
    ]
    for method, path, body in refused:
        with pytest.raises(ApiError) as denied:
            await request(narrow, method, path, body=body)
        assert status_code(denied.value) == 403, (method, path)


async def test_the_cli_reports_the_running_cluster(cluster):
    if cluster.local is None:
        pytest.skip("only the local backend has a state dir")
    state = str(cluster.local.state_dir)
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, ["status", "--state-dir", state])
    assert result.exit_code == 0, result.output
    assert cluster.local.apiserver_url in result.output
    result = await asyncio.to_thread(runner.invoke, app, ["env", "--state-dir", state])
    assert f"export KUBECONFIG={cluster.kubeconfig}" in result.output
    result = await asyncio.to_thread(runner.invoke, app, ["up", "--state-dir", state])
    assert result.exit_code == 0 and cluster.local.apiserver_url in result.output  # a no-op


async def test_kubectl_from_the_bin_dir_talks_to_the_cluster(cluster):
    if cluster.local is None:
        pytest.skip("only the local backend builds kubectl")
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "get",
        "nodes",
        "-o",
        "name",
        env=cluster.local.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert f"node/{cluster.local.node_name}" in out.decode().split()
