"""Tenancy against a real apiserver: a template serves only the namespaces its owner allows.

An instance in the tenant namespace (the `namespace` fixture) names a template in another
namespace (`admin_ns`): refused without a grant, allowed by each grant form, stopped (but nothing
deleted) when the grant is revoked, in once and in continuous mode. Plus the seed example with the
shipped cluster-wide install (its `kadense` catalogue), and Pod Security Admission's refusal
reaching the instance's status with nothing half-applied.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from reconcile_helpers import (
    EXAMPLES,
    actions,
    condition,
    edited,
    notebook_container,
    owned,
    pod_security_enforced,
    put,
    result_for,
    seed_instance,
    seed_template,
    status_of,
)
from test_controller import running, settings_for
from test_deploy import (
    RBAC_KINDS,
    REPO,
    build,
    container_process,
    delete_cluster_scoped,
    install_identity,
    one,
    run,
)

from jupyternetes_ssa.kube import INSTANCE, POD, PVC, TEMPLATE, ApiError, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.local_cluster.identity import can
from jupyternetes_ssa.local_cluster.kube import request
from jupyternetes_ssa.reconcile import reconcile_once
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.spawner import JupyternetesSpawner

pytestmark = pytest.mark.integration

TEAM = "tenancy.test/team"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@pytest.fixture
async def admin_ns(cluster) -> AsyncIterator[str]:
    """A second namespace, where the admin keeps templates."""
    name = f"t-admin-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await request(cluster.api, "POST", "/api/v1/namespaces", body=body)
    yield name
    await request(cluster.api, "DELETE", f"/api/v1/namespaces/{name}", ignore=(404,))


async def label(kube: Kube, namespace: str, labels: dict[str, str]) -> None:
    """Set the namespace's labels as the test admin (applying {} removes them again)."""
    await put(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": labels},
        },
    )


def debug_template(namespace: str) -> dict:
    """An admin's privileged template: the whole host's filesystem, in a privileged pod."""
    template = seed_template(namespace, "debug")
    pod = template["spec"]["pods"][0]["spec"]
    pod["containers"][0]["securityContext"] = {"privileged": True}
    pod["containers"][0]["volumeMounts"].append({"name": "host", "mountPath": "/host"})
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    return template


def shared_template(namespace: str, **grant) -> dict:
    template = seed_template(namespace, "shared")
    template["spec"].update(grant)
    return template


def instance_of(namespace: str, name: str, template_ns: str, template: str = "shared") -> dict:
    instance = seed_instance(namespace, name, template)
    instance["spec"]["template"]["namespace"] = template_ns
    return instance


async def one_pass(kube: Kube, *namespaces: str, prune_only: bool = False, **settings):
    settings_ = Settings(namespaces=namespaces, **settings)
    return await reconcile_once(kube, settings_, prune_only=prune_only)


async def degraded(kube: Kube, namespace: str, name: str) -> dict:
    return condition(await status_of(kube, namespace, name), "Degraded")


# --- once mode ---------------------------------------------------------------------------------


async def test_a_template_of_another_namespace_is_refused_without_a_grant(
    kube: Kube, namespace: str, admin_ns: str
):
    await put(kube, debug_template(admin_ns))
    await put(kube, seed_template(namespace))
    await put(kube, instance_of(namespace, "intruder", admin_ns, "debug"))
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await one_pass(kube, namespace, admin_ns)

    refused = result_for(summary, "intruder")
    assert refused.reason == "TemplateNotAllowed" and refused.outcomes == []
    status = await status_of(kube, namespace, "intruder")
    assert status["phase"] == "Error"
    cond = condition(status, "Degraded")
    assert (cond["status"], cond["reason"]) == ("True", "TemplateNotAllowed")
    message = cond["message"]
    assert f"JupyterNotebookTemplate {admin_ns}/debug does not serve namespace '{namespace}'" in (
        message
    )
    for how in ("spec.instanceNamespaces", "spec.instanceNamespaceSelector"):
        assert how in message
    assert f"--catalog-namespace {admin_ns}" in message
    assert await owned(kube, namespace, "intruder") == ([], [])
    assert await owned(kube, admin_ns, "intruder") == ([], [])
    assert actions(summary, "jovyan") == {"created": 2}, "the other instance still converges"
    live = await kube.get(INSTANCE, namespace, "intruder")
    with pytest.raises(RuntimeError, match="TemplateNotAllowed") as failed:  # fails the spawn
        JupyternetesSpawner()._ready_url(live, live["metadata"]["uid"])
    assert f"does not serve namespace '{namespace}'" in str(failed.value)


GRANTS = {
    "by name": ({"instanceNamespaces": ["{ns}"]}, {}),
    "every namespace": ({"instanceNamespaces": ["*"]}, {}),
    "matchLabels": ({"instanceNamespaceSelector": {"matchLabels": {TEAM: "physics"}}}, {}),
    "matchExpressions": (
        {
            "instanceNamespaceSelector": {
                "matchExpressions": [
                    {"key": TEAM, "operator": "In", "values": ["maths", "physics"]}
                ]
            }
        },
        {},
    ),
    "catalogue": ({}, {"catalog": True}),
}


@pytest.mark.parametrize("form", list(GRANTS))
async def test_each_grant_form_lets_the_instance_use_the_template(
    kube: Kube, namespace: str, admin_ns: str, form: str
):
    grant, options = GRANTS[form]
    grant = json.loads(json.dumps(grant).replace("{ns}", namespace))
    await label(kube, namespace, {TEAM: "physics"})
    await put(kube, shared_template(admin_ns, **grant))
    await put(kube, instance_of(namespace, "jovyan", admin_ns))

    if options.get("catalog"):  # serves only the tenant; the catalogue is read for templates
        summary = await one_pass(kube, namespace, catalog_namespaces=(admin_ns,))
    else:
        summary = await one_pass(kube, namespace, admin_ns)

    assert result_for(summary, "jovyan").error == ""
    assert actions(summary, "jovyan") == {"created": 2}
    pods, pvcs = await owned(kube, namespace, "jovyan")
    assert [p["metadata"]["name"] for p in pods] == ["jovyan-notebook"]
    assert [p["metadata"]["name"] for p in pvcs] == ["jovyan-workspace"]
    assert (await degraded(kube, namespace, "jovyan"))["status"] == "False"


async def test_a_selector_that_does_not_match_grants_nothing(
    kube: Kube, namespace: str, admin_ns: str
):
    await label(kube, namespace, {TEAM: "chemistry"})
    selector = {"matchLabels": {TEAM: "physics"}}
    await put(kube, shared_template(admin_ns, instanceNamespaceSelector=selector))
    await put(kube, instance_of(namespace, "jovyan", admin_ns))

    summary = await one_pass(kube, namespace, admin_ns)

    assert result_for(summary, "jovyan").reason == "TemplateNotAllowed"
    assert await owned(kube, namespace, "jovyan") == ([], [])


async def test_the_crd_refuses_a_malformed_grant(kube: Kube, admin_ns: str):
    bad = {"matchExpressions": [{"key": TEAM, "operator": "In"}]}
    with pytest.raises(ApiError) as caught:
        await put(kube, shared_template(admin_ns, instanceNamespaceSelector=bad))
    assert caught.value.status == 422
    assert "In and NotIn need values" in caught.value.message
    with pytest.raises(ApiError) as caught:
        await put(kube, shared_template(admin_ns, instanceNamespaces=["Not A Name"]))
    assert caught.value.status == 422


async def test_revoking_a_grant_stops_changes_and_deletes_nothing(
    kube: Kube, namespace: str, admin_ns: str
):
    granted = shared_template(admin_ns, instanceNamespaces=[namespace])
    await put(kube, granted)
    await put(kube, instance_of(namespace, "jovyan", admin_ns))
    assert actions(await one_pass(kube, namespace, admin_ns), "jovyan") == {"created": 2}
    await wait_for(
        lambda: _pod_phase(kube, namespace, "jovyan-notebook", "Running"),
        timeout=60,
        message="pod jovyan-notebook Running",
    )
    before = await kube.get(POD, namespace, "jovyan-notebook")

    def revoke_and_change(t: dict) -> None:
        del t["spec"]["instanceNamespaces"]
        notebook_container(t)["image"] = "quay.io/jupyter/base-notebook:hub-5.2.1"

    await put(kube, edited(granted, revoke_and_change))
    summary = await one_pass(kube, namespace, admin_ns)
    gc_alone = await one_pass(kube, namespace, admin_ns, prune_only=True)

    assert result_for(summary, "jovyan").reason == "TemplateNotAllowed"
    assert result_for(summary, "jovyan").outcomes == []
    assert summary.pruned == [] and gc_alone.pruned == []
    after = await kube.get(POD, namespace, "jovyan-notebook")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["containers"][0]["image"] == notebook_container(granted)["image"]
    assert await kube.get(PVC, namespace, "jovyan-workspace") is not None
    status = await status_of(kube, namespace, "jovyan")
    assert condition(status, "Degraded")["reason"] == "TemplateNotAllowed"
    assert status["pods"]["notebook"]["state"] == "Running", "the running server is reported"


async def _pod_phase(kube: Kube, ns: str, name: str, phase: str) -> bool:
    pod = await kube.get(POD, ns, name)
    return bool(pod) and pod.get("status", {}).get("phase") == phase


# --- continuous mode ---------------------------------------------------------------------------


async def test_the_controller_follows_grant_and_namespace_label_changes(
    kube: Kube, namespace: str, admin_ns: str
):
    await put(kube, shared_template(admin_ns))
    await put(kube, instance_of(namespace, "jovyan", admin_ns))
    settings = settings_for(namespace, namespaces=(namespace, admin_ns))
    async with running(kube, settings) as controller:
        await _wait_reason(kube, namespace, "TemplateNotAllowed", "refused without a grant")
        assert controller.namespace_informer is None, "no selector yet: namespaces not read"

        selector = {"matchLabels": {TEAM: "physics"}}
        await put(kube, shared_template(admin_ns, instanceNamespaceSelector=selector))
        await wait_for(
            lambda: _listed(controller),
            timeout=60,
            message="namespaces watched once a template grants by selector",
        )
        await label(kube, namespace, {TEAM: "physics"})
        await wait_for(
            lambda: _pod_phase(kube, namespace, "jovyan-notebook", "Running"),
            timeout=60,
            message="the label change lets the instance in",
        )
        await _wait_reason(kube, namespace, "AsExpected", "the instance converged")
        uid = (await kube.get(POD, namespace, "jovyan-notebook"))["metadata"]["uid"]

        await label(kube, namespace, {})
        await _wait_reason(kube, namespace, "TemplateNotAllowed", "label removed: revoked")
        pod = await kube.get(POD, namespace, "jovyan-notebook")
        assert pod is not None and pod["metadata"]["uid"] == uid, "revocation deletes nothing"
        assert await kube.get(PVC, namespace, "jovyan-workspace") is not None

        await put(kube, shared_template(admin_ns, instanceNamespaces=[namespace]))
        await _wait_reason(kube, namespace, "AsExpected", "granted by name again")


async def _listed(controller) -> bool:
    informer = controller.namespace_informer
    return informer is not None and informer.listed


async def _wait_reason(kube: Kube, namespace: str, reason: str, what: str) -> None:
    async def reached() -> bool:
        return (await degraded(kube, namespace, "jovyan")).get("reason") == reason

    await wait_for(reached, timeout=60, message=f"Degraded reason {reason}: {what}")


async def test_unreadable_namespace_labels_refuse_only_selector_grants(
    cluster, kube: Kube, namespace: str, admin_ns: str, sa_kubeconfig
):
    """The namespaced Role (no rights on namespaces), plus reading templates in admin_ns."""
    role = yaml.safe_load((REPO / "examples/deploy/rbac/namespace/role.yaml").read_text())
    identity = await sa_kubeconfig(role["rules"], name="namespaced")
    reader = [
        {
            "apiGroups": ["kadense.io"],
            "resources": ["jupyternotebooktemplates"],
            "verbs": ["list", "watch"],
        }
    ]
    await _grant_in(cluster, admin_ns, namespace, "namespaced", reader)
    narrow = await Kube.connect(kubeconfig=str(identity))
    await put(kube, shared_template(admin_ns, instanceNamespaceSelector={}))
    await put(kube, instance_of(namespace, "selected", admin_ns))
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))
    scope = {"template_namespaces": (namespace, admin_ns)}

    summary = await one_pass(narrow, namespace, **scope)

    refused = result_for(summary, "selected")
    assert refused.reason == "TemplateNotAllowed"
    assert "cannot read the labels of namespace" in refused.error
    assert "list and watch on namespaces" in refused.error
    assert actions(summary, "jovyan") == {"created": 2}
    async with running(narrow, settings_for(namespace, **scope)) as controller:
        await wait_for(lambda: _asked(controller), timeout=60, message="rights on namespaces")
        await wait_for(
            lambda: _phase_is(kube, namespace, "jovyan", "Running"),
            timeout=60,
            message="the other instance runs",
        )
        assert controller.namespace_informer is None, "not allowed: not watched"
        assert controller.synced(), "missing rights block neither readiness nor GC"
        assert all(i.last_error is None for i in controller.informers), "no watch was cut"
        cond = await degraded(kube, namespace, "selected")
        assert cond["reason"] == "TemplateNotAllowed", cond


async def _asked(controller) -> bool:
    asked = controller._namespaces_asked
    return asked is not None and asked.done()


async def _phase_is(kube: Kube, namespace: str, name: str, phase: str) -> bool:
    return (await status_of(kube, namespace, name)).get("phase") == phase


async def _grant_in(cluster, namespace: str, account_ns: str, account: str, rules) -> None:
    """A Role in `namespace` for a ServiceAccount of another namespace."""
    meta = {"name": account, "namespace": namespace}
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_ns}],
    }
    await request(cluster.api, "POST", f"{base}/roles", body=role)
    await request(cluster.api, "POST", f"{base}/rolebindings", body=binding)
    user = f"system:serviceaccount:{account_ns}:{account}"

    async def granted() -> bool:
        return await can(
            cluster.api, user, namespace, "list", "jupyternotebooktemplates", "kadense.io"
        )

    await wait_for(granted, timeout=30, message=f"RBAC grants {user} templates in {namespace}")


# --- the seed example with the shipped cluster-wide install ------------------------------------

SEED_NAME = "8dc366d8a0f05869bfdb6e7eb3d83f65"


async def test_the_seed_example_works_unchanged_with_the_shipped_cronjob(
    cluster, kube: Kube, namespace: str, tmp_path: Path
):
    kubectl = str(cluster.bin_dir / "kubectl") if cluster.bin_dir else "kubectl"
    docs = await build(kubectl, "cronjob", tmp_path, namespace, f"-{namespace}")
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    pod = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--catalog-namespace=kadense" in container["args"]
    argv, container_env = container_process(container, namespace, "jupyternetes-ssa-1-x7k2p")
    template = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
    instance = yaml.safe_load((EXAMPLES / "seed-instance.yaml").read_text())
    assert (template["metadata"]["namespace"], instance["metadata"]["namespace"]) == (
        "kadense",
        "default",
    )
    instance.pop("status")
    kadense = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kadense"}}
    await request(cluster.api, "POST", "/api/v1/namespaces", body=kadense, ignore=(409,))
    try:
        identity = await install_identity(
            cluster,
            kubectl,
            rbac,
            namespace,
            pod["serviceAccountName"],
            tmp_path / "k",
            ("patch", "pods", ""),
        )
        await put(kube, template)
        await put(kube, instance)
        env = {**os.environ, **container_env, "KUBECONFIG": str(identity)}
        done = await run(*argv, env=env, timeout=180)

        report = json.loads(done.stdout)
        # Cluster-wide, the pass also meets other tests' leftovers: judge the seed's own entry.
        (entry,) = [i for i in report["instances"] if i["instance"] == f"default/{SEED_NAME}"]
        assert entry["actions"] == {"created": 2}, (entry, done.stderr[-2000:])
        assert not entry.get("error"), entry
        assert await kube.get(POD, "default", f"{SEED_NAME}-notebook") is not None
        assert await kube.get(PVC, "default", f"{SEED_NAME}-workspace") is not None
    finally:
        await delete_cluster_scoped(cluster, kubectl, rbac)
        await kube.delete(INSTANCE, "default", SEED_NAME)
        await kube.delete(TEMPLATE, "kadense", "default-template")
        await kube.delete(PVC, "default", f"{SEED_NAME}-workspace")


# --- Pod Security Admission -------------------------------------------------------------------


def restricted_template(namespace: str) -> dict:
    """The seed template made to pass the `restricted` Pod Security level."""
    template = seed_template(namespace, "restricted-template")
    pod = template["spec"]["pods"][0]["spec"]
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    notebook_container(template)["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return template


async def test_pod_security_rejection_reaches_the_status_with_nothing_half_applied(
    kube: Kube, namespace: str
):
    await label(kube, namespace, RESTRICTED)
    await wait_for(
        lambda: pod_security_enforced(kube, namespace), timeout=30, message="PSA enforces"
    )
    await put(kube, seed_template(namespace))
    await put(kube, restricted_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))
    await put(kube, seed_instance(namespace, "compliant", "restricted-template"))

    summary = await one_pass(kube, namespace)

    assert result_for(summary, "jovyan").reason == "ApplyFailed"
    cond = await degraded(kube, namespace, "jovyan")
    assert cond["status"] == "True"
    assert 'violates PodSecurity "restricted:latest"' in cond["message"], cond
    assert "allowPrivilegeEscalation" in cond["message"]
    pods, pvcs = await owned(kube, namespace, "jovyan")
    # No dry-run on a start: its PVC, made first, stays for the next start (new, empty, ours);
    # the refused pod never existed.
    assert pods == [] and [p["metadata"]["name"] for p in pvcs] == ["jovyan-workspace"]
    assert actions(summary, "compliant") == {"created": 2}
