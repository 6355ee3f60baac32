"""examples/deploy/ against a real apiserver: every manifest is valid, and the rights are right.

1. Every installable kustomization of examples/deploy/ (built by the cluster's own `kubectl
   kustomize`, retargeted into a fresh namespace by a wrapper kustomization) and every
   examples/*.yaml is applied with a server-side dry-run, so none of them rots.
2. The CronJob's job, run by hand: its container's args (with `$(VAR)`s expanded as the kubelet
   does) as a local process holding only a token of the CronJob's ServiceAccount, whose Role and
   binding come from the manifests. It converges the seed instance.
3. The continuous Deployment's container the same way, cluster-wide with its ClusterRole: an
   instance converges, the Lease is held (and handed back on SIGTERM), the probes answer; and the
   same token is refused what the reconciler does not need.
4. The sidecar layout really gives each container its own identity; the hub's identity holds no
   right on Secrets and reads only the reconciler's public-key ConfigMap.

A local process stands in for the container: the token kubeconfig stands in for the projected
token the kubelet would mount, and the health port is a free one instead of 8080.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import rbac_audit
import yaml
from reconcile_helpers import EXAMPLES, owned, put, seed_instance, seed_template, status_of
from test_other_resources import with_others

from jupyternetes_ssa.kube import INSTANCE, LEASE, NAMESPACE, POD, SECRET, ApiError, Kube, Resource
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.local_cluster.identity import can, request_token, token_kubeconfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "examples" / "deploy"
INSTALLABLE = [
    "crds",
    "cronjob",
    "continuous",
    "other-resources",
    "namespaced/cronjob",
    "namespaced/continuous",
    "sidecar",
    "hub-rbac",
    "sharded",
]
BUILDING_BLOCKS = [
    "rbac/cluster",
    "rbac/namespace",
    "rbac/leader-election",
    "rbac/sealing-key",
    "workload/cronjob",
    "workload/continuous",
]
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
NODE = Resource("v1", "Node", "nodes", namespaced=False)
DEPLOYMENT = Resource("apps/v1", "Deployment", "deployments")
EVENT = Resource("v1", "Event", "events")
SELF_REVIEW = Resource("authentication.k8s.io/v1", "SelfSubjectReview", "selfsubjectreviews")


# --- plumbing ---------------------------------------------------------------------------------


@pytest.fixture
def kubectl(cluster) -> str:
    if cluster.bin_dir is not None:
        return str(cluster.bin_dir / "kubectl")
    from shutil import which

    found = which("kubectl")
    assert found, "the kind and existing backends need kubectl on PATH"
    return found


async def run(
    *argv: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """A command in a thread (the test's event loop keeps running), with a deadline."""
    return await asyncio.to_thread(
        subprocess.run,
        list(argv),
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def admin_env(cluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}


async def build(
    kubectl: str, overlay: str, workdir: Path, namespace: str, suffix: str = ""
) -> list[dict]:
    """`kubectl kustomize` of the overlay, moved into `namespace` by a wrapper kustomization.

    The wrapper only sets `namespace:` (and a name suffix for cluster-scoped objects shared by
    parallel tests), exactly what an admin does to install into another namespace.
    """
    wrapper = workdir / f"wrap-{overlay.replace('/', '-')}"
    wrapper.mkdir(parents=True)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [os.path.relpath(DEPLOY / overlay, wrapper)],
    }
    if suffix:
        kustomization["nameSuffix"] = suffix
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    built = await run(kubectl, "kustomize", str(wrapper))
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


async def kubectl_apply(
    cluster, kubectl: str, docs: list[dict], *, dry_run: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = [
        kubectl,
        "apply",
        "--server-side",
        "--field-manager=jupyternetes-ssa-install",
        "-f",
        "-",
    ]
    if dry_run:
        argv.append("--dry-run=server")
    return await run(*argv, env=admin_env(cluster), stdin=yaml.safe_dump_all(docs))


def one(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def container_process(
    container: dict, namespace: str, pod_name: str, pod_labels: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The container as a local process: `python -m jupyternetes_ssa ARGS` and its env.

    The image's ENTRYPOINT is the `jupyternetes-ssa` console script, so the container's `args`
    are the command's arguments. Downward-API env values are what the kubelet would give this
    pod; `$(VAR)` in args is expanded from the container's env and `$$` is a literal `$`, as the
    kubelet does.
    """
    fields = {"metadata.namespace": namespace, "metadata.name": pod_name}
    fields |= {f"metadata.labels['{k}']": v for k, v in (pod_labels or {}).items()}
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]

    def expand(text: str) -> str:
        return VAR.sub(
            lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text
        )

    assert "command" not in container, "the image's ENTRYPOINT must run"
    argv = [sys.executable, "-m", "jupyternetes_ssa", *map(expand, container["args"])]
    return argv, env


async def account_kubeconfig(
    cluster, namespace: str, account: str, out: Path, *probes: tuple[str, str, str]
) -> Path:
    """A kubeconfig holding a TokenRequest token of `account`, once RBAC grants it `probes`."""
    user = f"system:serviceaccount:{namespace}:{account}"
    for verb, resource, group in probes:

        async def granted(verb=verb, resource=resource, group=group) -> bool:
            return await can(cluster.api, user, namespace, verb, resource, group)

        await wait_for(granted, timeout=30, message=f"RBAC grants {verb} {resource} to {user}")
    token = await request_token(cluster.api, namespace, account)
    return token_kubeconfig(cluster.kubeconfig, token, out, namespace)


async def install_identity(
    cluster,
    kubectl: str,
    rbac: list[dict],
    namespace: str,
    account: str,
    out: Path,
    *probes: tuple[str, str, str],
) -> Path:
    """Apply an overlay's RBAC, then a kubeconfig of its ServiceAccount once RBAC grants it."""
    installed = await kubectl_apply(cluster, kubectl, rbac)
    assert installed.returncode == 0, installed.stderr
    return await account_kubeconfig(cluster, namespace, account, out, *probes)


async def delete_cluster_scoped(cluster, kubectl: str, rbac: list[dict]) -> None:
    """ClusterRoles and their bindings outlive the test namespace: remove them."""
    for doc in (d for d in rbac if d["kind"].startswith("Cluster")):
        await run(
            kubectl,
            "delete",
            "--ignore-not-found",
            doc["kind"].lower(),
            doc["metadata"]["name"],
            env=admin_env(cluster),
        )


async def whoami(kube: Kube) -> str:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = await kube.request("POST", SELF_REVIEW, None, SELF_REVIEW.url(), json=review)
    return answer["status"]["userInfo"]["username"]


def used_only_granted(cluster, identity: Path, rbac: list[dict]) -> None:
    """Every request made with the token in `identity` was allowed by the Roles among `rbac`
    (read from the local cluster's audit log; kind and existing clusters keep theirs)."""
    if cluster.local is None:
        return
    used = rbac_audit.uses(cluster.local.audit_log, rbac_audit.credential(identity))
    assert used, "the audit log shows no request made with the reconciler's token"
    missing = rbac_audit.not_granted(used, rbac_audit.rules(rbac))
    assert not missing, f"the reconciler used rights its Roles lack: {missing}"


async def refused(action) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await action
    return caught.value


# --- 1. every manifest is valid ----------------------------------------------------------------


def test_every_kustomization_is_either_installable_or_a_building_block():
    found = sorted(str(p.parent.relative_to(DEPLOY)) for p in DEPLOY.rglob("kustomization.yaml"))
    assert found == sorted(INSTALLABLE + BUILDING_BLOCKS)


@pytest.mark.parametrize("overlay", INSTALLABLE)
async def test_every_installable_kustomization_passes_a_server_side_dry_run(
    cluster, kubectl: str, namespace: str, tmp_path: Path, overlay: str
):
    docs = await build(kubectl, overlay, tmp_path, namespace)
    assert docs

    applied = await kubectl_apply(cluster, kubectl, docs, dry_run=True)

    assert applied.returncode == 0, applied.stderr
    lines = [line for line in applied.stdout.splitlines() if line.strip()]
    assert len(lines) == len(docs), applied.stdout
    assert all(line.endswith("serverside-applied (server dry run)") for line in lines), lines
    for doc in docs:
        assert any(f"/{doc['metadata']['name']} " in line for line in lines), doc["metadata"]
        if doc["kind"] != "Namespace" and "namespace" in doc["metadata"]:
            assert doc["metadata"]["namespace"] == namespace


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
async def test_every_example_passes_a_server_side_dry_run(
    cluster, kubectl: str, namespace: str, example: str
):
    docs = [d for d in yaml.safe_load_all((EXAMPLES / example).read_text()) if d]
    for doc in docs:
        meta = doc["metadata"]
        meta["namespace"] = namespace
        for server_side in ("uid", "resourceVersion", "creationTimestamp"):
            meta.pop(server_side, None)
        doc.pop("status", None)

    applied = await kubectl_apply(cluster, kubectl, docs, dry_run=True)

    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("serverside-applied (server dry run)") == len(docs)


# --- 2. once mode: the CronJob's job, by hand ----------------------------------------------------


async def test_the_cronjobs_job_converges_an_instance_with_only_its_own_role(
    cluster, kubectl: str, kube: Kube, namespace: str, tmp_path: Path
):
    docs = await build(kubectl, "namespaced/cronjob", tmp_path, namespace)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding", "CronJob"}
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    installed = await kubectl_apply(cluster, kubectl, rbac)
    assert installed.returncode == 0, installed.stderr
    job = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    identity = await account_kubeconfig(
        cluster,
        namespace,
        pod["serviceAccountName"],
        tmp_path / "cronjob.kubeconfig",
        ("patch", "pods", ""),
    )
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))
    (container,) = pod["containers"]
    argv, container_env = container_process(container, namespace, "jupyternetes-ssa-29381220-x7k2p")
    assert argv[3:] == [
        "reconcile",
        "--once",
        "--output=json",
        "--log-format=json",
        f"--namespace={namespace}",
    ]

    env = {**os.environ, **container_env, "KUBECONFIG": str(identity)}
    done = await run(*argv, env=env, timeout=job["activeDeadlineSeconds"])

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True, report
    (entry,) = report["instances"]
    assert entry["instance"] == f"{namespace}/jovyan" and entry["statusWritten"] is True
    assert entry["actions"] == {"created": 2}, entry
    pods, pvcs = await owned(kube, namespace, "jovyan")
    assert [p["metadata"]["name"] for p in pods] == ["jovyan-notebook"]
    assert [p["metadata"]["name"] for p in pvcs] == ["jovyan-workspace"]
    status = await status_of(kube, namespace, "jovyan")
    assert status["observedGeneration"] == 1
    assert status["pods"]["notebook"]["resourceName"] == "jovyan-notebook"
    assert status["pvcs"]["workspace"]["resourceName"] == "jovyan-workspace"
    assert {c["type"] for c in status["conditions"]} >= {"Ready", "Progressing", "Degraded"}
    used_only_granted(cluster, identity, rbac)


# --- 3. continuous mode: enough rights, and no more ----------------------------------------------


async def _phase(kube: Kube, namespace: str, name: str, phase: str) -> bool:
    return (await status_of(kube, namespace, name)).get("phase") == phase


async def _holder(kube: Kube, namespace: str, name: str) -> str | None:
    lease = await kube.get(LEASE, namespace, name)
    return (lease or {}).get("spec", {}).get("holderIdentity")


async def _http_ok(url: str) -> httpx.Response | None:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        response = await http.get(url)
    return response if response.status_code == 200 else None


async def test_continuous_mode_converges_and_leads_with_its_cluster_role_and_no_more(
    cluster, kubectl: str, kube: Kube, namespace: str, tmp_path: Path
):
    suffix = f"-{namespace}"  # the ClusterRole and its binding are cluster-wide: unique names
    docs = await build(kubectl, "continuous", tmp_path, namespace, suffix)
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    assert {d["kind"] for d in rbac} == RBAC_KINDS
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_name = f"{deployment['metadata']['name']}-6c9d8f7b5-q4w2z"
    argv, container_env = container_process(container, namespace, pod_name)
    assert "--leader-elect" in argv and f"--lease-namespace={namespace}" in argv
    port = free_port()  # 8080 may be taken on this machine; the pod would have its own
    argv = [f"--health-port={port}" if a == "--health-port=8080" else a for a in argv]
    log = tmp_path / "reconciler.log"
    try:
        identity = await install_identity(
            cluster,
            kubectl,
            rbac,
            namespace,
            pod["serviceAccountName"],
            tmp_path / "continuous.kubeconfig",
            ("patch", "pods", ""),
            ("create", "leases", "coordination.k8s.io"),
        )
        env = {**os.environ, **container_env, "KUBECONFIG": str(identity)}
        with log.open("w") as out:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            await _converges_and_leads(kube, namespace, pod_name, port, log)
            # The same account with another token: the audit log tells these probes apart.
            probe = tmp_path / "probe.kubeconfig"
            account = pod["serviceAccountName"]
            await account_kubeconfig(cluster, namespace, account, probe)
            await _refuses_what_it_does_not_need(probe, namespace)
        finally:
            proc.send_signal(signal.SIGTERM)  # what the kubelet sends at a rollout or drain
            try:
                code = await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert code == 0, log.read_text()[-3000:]
        assert await _holder(kube, namespace, "jupyternetes-ssa") == "", "lease handed back"
        used_only_granted(cluster, identity, rbac)
    finally:
        await delete_cluster_scoped(cluster, kubectl, rbac)


async def _converges_and_leads(
    kube: Kube, namespace: str, pod_name: str, port: int, log: Path
) -> None:
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))
    where = f"(reconciler log: {log})"
    await wait_for(
        lambda: _holder(kube, namespace, "jupyternetes-ssa"),
        timeout=30,
        message=f"the Lease is taken {where}",
    )
    assert await _holder(kube, namespace, "jupyternetes-ssa") == pod_name
    await wait_for(
        lambda: _phase(kube, namespace, "jovyan", "Running"),
        timeout=60,
        message=f"instance jovyan Running {where}",
    )
    live = await kube.get(POD, namespace, "jovyan-notebook")
    assert live["status"]["phase"] == "Running"
    (owner,) = live["metadata"]["ownerReferences"]
    assert owner["kind"] == INSTANCE.kind and owner["blockOwnerDeletion"] is True
    base = f"http://127.0.0.1:{port}"
    await wait_for(lambda: _http_ok(f"{base}/readyz"), timeout=30, message=f"/readyz {where}")
    assert await _http_ok(f"{base}/healthz")
    metrics = (await _http_ok(f"{base}/metrics")).text
    assert re.search(r"^jupyternetes_leader 1\.0$", metrics, re.M), metrics


async def _refuses_what_it_does_not_need(identity: Path, namespace: str) -> None:
    narrow = await Kube.connect(kubeconfig=str(identity))
    template_edit = {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookTemplate",
        "metadata": {"name": "default-template", "namespace": namespace},
        "spec": {"pods": []},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "not-ours", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    event = {  # the one write outside our objects: Events on instances (jupyternetes_ssa/events.py)
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "jovyan.test", "namespace": namespace},
        "involvedObject": {"kind": INSTANCE.kind, "name": "jovyan", "namespace": namespace},
        "reason": "Test",
        "message": "the reconciler may record events",
    }
    await narrow.request("POST", EVENT, namespace, EVENT.url(), content=json.dumps(event))
    attempts = {
        "list Secrets": lambda: narrow.request("GET", SECRET, namespace, SECRET.url()),
        "list nodes": lambda: narrow.request("GET", NODE, None, NODE.url()),
        "patch a template": lambda: narrow.apply(template_edit, field_manager="intruder"),
        "patch an instance's spec": lambda: narrow.request(
            "PATCH",
            INSTANCE,
            namespace,
            INSTANCE.url("jovyan"),
            content=json.dumps({"spec": {"purge": True}}),
            headers={"Content-Type": "application/merge-patch+json"},
        ),
        "delete the namespace": lambda: narrow.request(
            "DELETE", NAMESPACE, None, NAMESPACE.url(namespace)
        ),
        "create a Deployment": lambda: narrow.request(
            "POST", DEPLOYMENT, namespace, DEPLOYMENT.url(), content=json.dumps(deployment)
        ),
    }
    for what, attempt in attempts.items():
        err = await refused(attempt())
        assert err.status == 403, f"{what}: {err}"


# --- 4. sidecar: one identity per container; the hub's rights -------------------------------------


async def test_the_sidecar_pod_gives_each_container_only_its_own_identity(
    cluster, kubectl: str, kube: Kube, namespace: str, tmp_path: Path
):
    docs = await build(kubectl, "sidecar", tmp_path, namespace)
    installed = await kubectl_apply(cluster, kubectl, docs)
    assert installed.returncode == 0, installed.stderr
    selector = "app.kubernetes.io/name=jupyterhub,app.kubernetes.io/component=hub"

    async def hub_pod() -> dict | None:
        pods = (await kube.list(POD, namespace, label_selector=selector)).items
        return pods[0] if pods else None

    pod = await wait_for(hub_pod, timeout=60, message="the Deployment's hub pod")

    spec = pod["spec"]
    assert spec["serviceAccountName"] == "jupyternetes-ssa"
    assert not [v for v in spec["volumes"] if v["name"].startswith("kube-api-access")]
    sa_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    mounted = {
        c["name"]: {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        for c in spec["containers"]
    }
    assert mounted["hub"][sa_path] == "hub-token"
    assert mounted["reconciler"][sa_path] == "reconciler-token"
    volumes = {v["name"]: v for v in spec["volumes"]}
    (token_source,) = [
        s for s in volumes["reconciler-token"]["projected"]["sources"] if "serviceAccountToken" in s
    ]
    assert token_source["serviceAccountToken"]["path"] == "token"

    async def hub_token() -> str | None:
        secret = await kube.get(SECRET, namespace, "jupyterhub-token")
        token = ((secret or {}).get("data") or {}).get("token")
        return base64.b64decode(token).decode() if token else None

    token = await wait_for(hub_token, timeout=60, message="the token controller fills the Secret")
    hub = await Kube.connect(
        kubeconfig=str(
            token_kubeconfig(cluster.kubeconfig, token, tmp_path / "hub.kubeconfig", namespace)
        )
    )
    assert await whoami(hub) == f"system:serviceaccount:{namespace}:jupyterhub"
    await hub.list(INSTANCE, namespace)  # the hub's own right
    err = await refused(hub.list(POD, namespace))
    assert err.status == 403, "the hub container must hold no rights on pods"
    reconciler = f"system:serviceaccount:{namespace}:jupyternetes-ssa"
    await wait_for(
        lambda: can(cluster.api, reconciler, namespace, "create", "pods", ""),
        timeout=30,
        message="RBAC grants the pod's own account (the reconciler) its Role",
    )
    assert not await can(
        cluster.api, reconciler, namespace, "create", "leases", "coordination.k8s.io"
    )


CONFIGMAP = Resource("v1", "ConfigMap", "configmaps")


async def test_the_hub_may_write_instances_and_read_the_public_key_and_nothing_else(
    cluster, kubectl: str, kube: Kube, namespace: str, tmp_path: Path
):
    """examples/hub-rbac.yaml plus the reconciler's rbac/sealing-key: the hub holds no right on
    Secrets at all (so it can mint no service-account token and read no Secret), and reads the
    one public-key ConfigMap only."""
    docs = await build(kubectl, "hub-rbac", tmp_path, namespace)
    docs += await build(kubectl, "rbac/sealing-key", tmp_path, namespace)
    installed = await kubectl_apply(cluster, kubectl, docs)
    assert installed.returncode == 0, installed.stderr
    identity = await account_kubeconfig(
        cluster,
        namespace,
        "jupyterhub",
        tmp_path / "hub.kubeconfig",
        ("create", "jupyternotebookinstances", "kadense.io"),
    )
    hub = await Kube.connect(kubeconfig=str(identity))
    for name in ("jupyternetes-ssa-public-key", "other"):
        await kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"k": "v"},
            }
        )
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "database", "namespace": namespace},
            "stringData": {"password": "hunter2"},
        }
    )
    minted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "minted",
            "namespace": namespace,
            "annotations": {"kubernetes.io/service-account.name": "default"},
        },
        "type": "kubernetes.io/service-account-token",
    }

    assert (await hub.get(CONFIGMAP, namespace, "jupyternetes-ssa-public-key"))["data"]
    attempts = {
        "mint a token Secret": hub.request(
            "POST", SECRET, namespace, SECRET.url(), content=json.dumps(minted)
        ),
        "read a Secret": hub.request("GET", SECRET, namespace, SECRET.url("database")),
        "patch a Secret": hub.request(
            "PATCH",
            SECRET,
            namespace,
            SECRET.url("database"),
            content="{}",
            headers={"Content-Type": "application/merge-patch+json"},
        ),
        "list Secrets": hub.request("GET", SECRET, namespace, SECRET.url()),
        "read another ConfigMap": hub.request("GET", CONFIGMAP, namespace, CONFIGMAP.url("other")),
        "list ConfigMaps": hub.request("GET", CONFIGMAP, namespace, CONFIGMAP.url()),
        "change the public key": hub.request(
            "PATCH",
            CONFIGMAP,
            namespace,
            CONFIGMAP.url("jupyternetes-ssa-public-key"),
            content='{"data": {"publicKey": "mine"}}',
            headers={"Content-Type": "application/merge-patch+json"},
        ),
    }
    for what, attempt in attempts.items():
        err = await refused(attempt)
        assert err.status == 403, f"{what}: {err}"
        assert "hunter2" not in json.dumps(err.body)


async def test_the_other_resources_overlay_grants_what_its_allow_kinds_need(
    cluster, kubectl: str, kube: Kube, namespace: str, tmp_path: Path
):
    suffix = f"-{namespace}"
    docs = await build(kubectl, "other-resources", tmp_path, namespace, suffix)
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    allow = [a for a in container["args"] if a.startswith("--allow-kind=")]
    assert len(allow) == 3
    try:
        identity = await install_identity(
            cluster,
            kubectl,
            rbac,
            namespace,
            pod["serviceAccountName"],
            tmp_path / "other.kubeconfig",
            ("patch", "pods", ""),
            ("patch", "networkpolicies", "networking.k8s.io"),
        )
        await put(kube, with_others(namespace))
        await put(kube, seed_instance(namespace, "jovyan"))
        argv = [
            sys.executable,
            "-m",
            "jupyternetes_ssa",
            "reconcile",
            "--once",
            "-n",
            namespace,
            "--output=json",
            *allow,
        ]
        done = await run(*argv, env={**os.environ, "KUBECONFIG": str(identity)}, timeout=120)

        assert done.returncode == 0, done.stdout + done.stderr
        (entry,) = json.loads(done.stdout)["instances"]
        assert entry["actions"] == {"created": 5}, entry
        used_only_granted(cluster, identity, rbac)
    finally:
        await delete_cluster_scoped(cluster, kubectl, rbac)


# --- 5. RBAC proven by use: the shipped Role against the apiserver's audit log -------------------

# Granted, and needed, but no request of the scenario below can show it.
UNEXERCISED = {
    # Checked by the OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened
    # clusters) when a pod with blockOwnerDeletion is created: an authorization inside the
    # apiserver, not a request, so the audit log never shows it; the local cluster runs without
    # that plugin.
    ("kadense.io", "jupyternotebookinstances/finalizers", "update"),
    # prune.py GETs an object that changed between the list and its delete (a PVC being bound),
    # a race this scenario cannot time; test_robustness provokes it with the admin's rights. The
    # same path for pods, and wait.py, GET pods here.
    ("", "persistentvolumeclaims", "get"),
    # events.py bumps an Event told again (the same problem coming back) with a patch; this
    # scenario tells nothing twice (a start is told by the status, not by Events).
    ("", "events", "patch"),
    # Continuous GC GETs an instance before deleting, as an orphan, an object its deletion left
    # (a pod without ownerReference, a PVC with deletionPolicy Delete); the seed template here
    # makes none. test_controller_trust's lagging-watch test exercises it.
    ("kadense.io", "jupyternotebookinstances", "get"),
    # The token Secret of an instance with a sealed API token (its apply), and re-publishing the
    # public key after a rotation: the seed instance here carries its token in plain variables;
    # test_sealed_token covers both with the admin's rights.
    ("", "secrets", "patch"),
    ("", "configmaps", "update"),
}


@pytest.fixture
def audit_log(cluster) -> Path:
    if cluster.local is None:
        pytest.skip("the audit log is the local cluster's (kind and existing clusters keep theirs)")
    return cluster.local.audit_log


async def _reconcile(identity: Path, namespace: str, *args: str) -> None:
    argv = [sys.executable, "-m", "jupyternetes_ssa", "reconcile", f"--namespace={namespace}"]
    argv.append(f"--key-namespace={namespace}")  # as POD_NAMESPACE would say in the cluster
    done = await run(*argv, *args, env={**os.environ, "KUBECONFIG": str(identity)})
    assert done.returncode == 0, done.stdout + done.stderr


async def _continuous_serves_then_purges(
    identity: Path, namespace: str, kube: Kube, log: Path
) -> None:
    """The continuous reconciler with leader election: it serves, then purges; then SIGTERM."""
    argv = [sys.executable, "-m", "jupyternetes_ssa", "reconcile", f"--namespace={namespace}"]
    argv += ["--leader-elect", f"--lease-namespace={namespace}", "--health-port=0"]
    argv.append(f"--key-namespace={namespace}")
    env = {**os.environ, "KUBECONFIG": str(identity), "POD_NAME": "rbac-by-use"}
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        for what, check in (
            ("the Lease is taken", lambda: _holder(kube, namespace, "jupyternetes-ssa")),
            ("instance jovyan Running", lambda: _phase(kube, namespace, "jovyan", "Running")),
        ):
            await wait_for(check, timeout=60, message=f"{what} (log: {log})")
        purged = seed_instance(namespace, "jovyan")
        purged["spec"]["purge"] = True  # as the spawner's delete_forever: pod and PVC go
        await put(kube, purged)
        await wait_for(
            lambda: _all_deleted(kube, namespace, "jovyan"),
            timeout=60,
            message=f"the pod and the PVC of jovyan deleted (log: {log})",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log.read_text()[-3000:]


async def _all_deleted(kube: Kube, namespace: str, instance: str) -> bool:
    pods, pvcs = await owned(kube, namespace, instance)
    return not pods and all(p["metadata"].get("deletionTimestamp") for p in pvcs)


async def test_the_namespaced_role_grants_exactly_what_the_reconciler_uses(
    cluster, kubectl: str, kube: Kube, namespace: str, tmp_path: Path, audit_log: Path
):
    """Every request the reconciler makes with its token (once and continuous, creating,
    re-creating and purging a server) is allowed by the shipped Roles, and every right they grant
    was used, except the UNEXERCISED ones, each with its reason."""
    docs = await build(kubectl, "namespaced/continuous", tmp_path, namespace)
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    identity = await install_identity(
        cluster,
        kubectl,
        rbac,
        namespace,
        one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        tmp_path / "reconciler.kubeconfig",
        ("patch", "pods", ""),
        ("create", "leases", "coordination.k8s.io"),
    )
    template = seed_template(namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))

    await _reconcile(identity, namespace, "--once")  # creates the PVC and the pod
    container = template["spec"]["pods"][0]["spec"]["containers"][0]
    container.setdefault("env", []).append({"name": "CHANGED", "value": "yes"})  # not in place
    await put(kube, template)
    await _reconcile(identity, namespace, "--once", "--recreate-pods")  # delete, wait, create
    await _continuous_serves_then_purges(identity, namespace, kube, tmp_path / "continuous.log")

    used = rbac_audit.uses(audit_log, rbac_audit.credential(identity))
    granted = rbac_audit.rules(rbac)
    assert not rbac_audit.not_granted(used, granted), (
        "the reconciler used rights its Roles (examples/deploy/rbac/) lack: "
        f"{rbac_audit.not_granted(used, granted)}"
    )
    assert not rbac_audit.never_used(granted, used, UNEXERCISED), (
        "examples/deploy/rbac/ grants rights the reconciler never used: "
        f"{rbac_audit.never_used(granted, used, UNEXERCISED)}; used: {sorted(map(str, used))}"
    )


def test_the_audit_reading_tells_credentials_apart_and_matches_rules_exactly(tmp_path: Path):
    """The comparison itself, on a hand-written log: other tokens, non-resource URLs and another
    account's requests do not count; an apply that created counts as create; a 403 is a use;
    resourceNames and subresources are matched exactly."""
    claims = base64.urlsafe_b64encode(json.dumps({"jti": "abc"}).encode()).decode().rstrip("=")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({"users": [{"user": {"token": f"h.{claims}.s"}}]}))
    mine = rbac_audit.credential(kubeconfig)
    assert mine == "JTI=abc"

    def event(verb, ref, code=200, credential=mine):
        user = {"username": "u", "extra": {rbac_audit.CREDENTIAL: [credential]}}
        return {"verb": verb, "objectRef": ref, "user": user, "responseStatus": {"code": code}}

    pods = {"resource": "pods", "namespace": "n", "apiVersion": "v1"}
    lease = {"resource": "leases", "apiGroup": "coordination.k8s.io", "name": "other"}
    status = {"resource": "things", "apiGroup": "x.io", "subresource": "status", "name": "t"}
    log = tmp_path / "audit.log"
    log.write_text(
        "\n".join(
            json.dumps(e)
            for e in (
                event("list", pods),
                event("patch", {**pods, "name": "p"}, code=201),  # an apply that created
                event("get", lease, code=403),
                event("patch", status),
                event("get", None),  # /version: no objectRef
                event("delete", {**pods, "name": "p"}, credential="JTI=someone-else"),
            )
        )
        + "\n"
    )
    used = rbac_audit.uses(log, mine)
    assert sorted(map(str, used)) == [
        "create pods p",
        "get leases.coordination.k8s.io other",
        "list pods",
        "patch pods p",
        "patch things/status.x.io t",
    ]
    granted = rbac_audit.rules(
        [
            {
                "kind": "Role",
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["pods"],
                        "verbs": ["list", "patch", "create"],
                    },
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
                    {
                        "apiGroups": ["coordination.k8s.io"],
                        "resources": ["leases"],
                        "resourceNames": ["mine"],
                        "verbs": ["get"],
                    },
                    {"apiGroups": ["x.io"], "resources": ["things"], "verbs": ["patch"]},
                ],
            },
            {"kind": "RoleBinding"},
        ]
    )
    assert rbac_audit.not_granted(used, granted) == [
        "get leases.coordination.k8s.io other",  # another name than resourceNames allows
        "patch things/status.x.io t",  # the object, not its status subresource, was granted
    ]
    assert rbac_audit.never_used(granted, used, {}) == [
        "delete pods",
        "get leases.coordination.k8s.io (resourceNames mine)",
        "patch things.x.io",
    ]
    assert rbac_audit.never_used(granted, used, {("", "pods", "delete"): "why"}) == [
        "get leases.coordination.k8s.io (resourceNames mine)",
        "patch things.x.io",
    ]
