"""The cluster side of a run: the target cluster, the measured identity, namespaces, /metrics.

The bench itself (the observer, and the admin's setup) acts as the cluster admin; every
contender acts as one ServiceAccount, the *subject*, whose requests the apiserver counts for us
(see bench.attribution); the hub acts as a ServiceAccount of its own, as a real hub does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.attribution import FLOW_LABEL_KEY, Snapshot, flow_schemas, hub_flow_schema, schema_name
from jupyternetes_ssa import local_cluster
from jupyternetes_ssa.kube import NAMESPACE, ApiError, Kube, Resource
from jupyternetes_ssa.local_cluster.identity import request_token, token_kubeconfig
from jupyternetes_ssa.local_cluster.kube import apply, request

log = logging.getLogger("bench")
SYSTEM_NAMESPACE = "jupyternetes-bench-system"
SUBJECT = "subject"
BINDING = "jupyternetes-bench-subject"
HUB = "hub"
HUB_ROLE = "jupyternetes-bench-hub"  # its ClusterRole, ClusterRoleBinding and FlowSchema
MANAGER = "jupyternetes-bench"
SERVICE_ACCOUNT = Resource("v1", "ServiceAccount", "serviceaccounts")
PERSISTENT_VOLUME = Resource("v1", "PersistentVolume", "persistentvolumes")
FLOW_SCHEMAS = "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
TOKEN_SECONDS = 6 * 3600


@dataclass
class Target:
    """The cluster under test: ours (started in a temp state dir) or one given by kubeconfig."""

    kubeconfig: Path
    kubectl: Path
    state_dir: Path | None = None  # set when we started it (and so must stop it)
    audit_log: Path | None = None  # the apiserver's audit log, when we can read it

    @classmethod
    def start_local(cls, state_dir: Path, keep: bool) -> Target:
        """A fresh local control plane; reaped with this process unless it is to be kept."""
        cluster = local_cluster.up(state_dir, owner_pid=None if keep else os.getpid())
        return cls(cluster.kubeconfig, cluster.bin_dir / "kubectl", state_dir, cluster.audit_log)

    @classmethod
    def existing(cls, kubeconfig: Path, kubectl: str | None) -> Target:
        found = kubectl or shutil.which("kubectl")
        if not found:
            candidate = local_cluster.default_bin_dir() / "kubectl"
            found = str(candidate) if candidate.exists() else None
        if not found:
            raise SystemExit("kubectl not found: pass --kubectl PATH")
        return cls(kubeconfig, Path(found))

    def stop(self) -> None:
        if self.state_dir is not None:
            local_cluster.down(self.state_dir)


class Scraper:
    """Reads the apiserver's /metrics with kubectl: works with any kubeconfig's auth."""

    def __init__(self, kubectl: Path, kubeconfig: Path):
        self.argv = [str(kubectl), "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics"]

    async def text(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        if proc.returncode:
            raise RuntimeError(f"reading /metrics failed: {err.decode(errors='replace')}")
        return out.decode()

    async def snapshot(self) -> Snapshot:
        return Snapshot.parse(await self.text())


async def kubernetes_version(kube: Kube) -> str:
    body = await kube.api.version()
    return body.get("gitVersion", "unknown")


async def _account(
    api: Any, name: str, role: str, binding: str, admin_kubeconfig: Path, out: Path
) -> Path:
    """A ServiceAccount of the bench's namespace bound to ClusterRole `role`, and a kubeconfig
    acting as it with a bearer token."""
    ns_body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}
    await apply(api, f"/api/v1/namespaces/{SYSTEM_NAMESPACE}", ns_body, MANAGER)
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
    }
    await apply(
        api, f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts/{name}", account, MANAGER
    )
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NAMESPACE}],
    }
    await apply(api, f"{RBAC}/clusterrolebindings/{binding}", body, MANAGER)
    token = await request_token(api, SYSTEM_NAMESPACE, name, seconds=TOKEN_SECONDS)
    return token_kubeconfig(admin_kubeconfig, token, out, SYSTEM_NAMESPACE)


async def make_subject(api: Any, admin_kubeconfig: Path, out: Path) -> Path:
    """A ServiceAccount with cluster-admin rights and a kubeconfig (bearer token) acting as it.

    cluster-admin keeps the rights question out of the benchmark; what is measured is requests.
    """
    return await _account(api, SUBJECT, "cluster-admin", BINDING, admin_kubeconfig, out)


async def make_hub(api: Any, admin_kubeconfig: Path, out: Path) -> Path:
    """The hub's ServiceAccount and a kubeconfig (bearer token) acting as it: the spawner's
    rights (examples/deploy/hub-rbac, in every namespace), and a bearer token as a hub in a pod
    has. The admin's client certificate would cost the apiserver a signature check on every
    request (it caches token reviews, not certificate checks), a cost no real hub imposes. Its
    FlowSchema is APF's exempt level, as the admin's requests were: nothing queues the hub."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": HUB_ROLE},
        "rules": [
            {
                "apiGroups": ["kadense.io"],
                "resources": ["jupyternotebookinstances"],
                "verbs": ["list", "watch", "create", "patch", "delete"],
            }
        ],
    }
    await apply(api, f"{RBAC}/clusterroles/{HUB_ROLE}", role, MANAGER)
    schema = hub_flow_schema(SYSTEM_NAMESPACE, HUB)
    await apply(api, f"{FLOW_SCHEMAS}/{schema['metadata']['name']}", schema, MANAGER)
    return await _account(api, HUB, HUB_ROLE, HUB_ROLE, admin_kubeconfig, out)


async def install_flow_schemas(api: Any) -> int:
    schemas = flow_schemas(SYSTEM_NAMESPACE, SUBJECT)
    for schema in schemas:
        await apply(api, f"{FLOW_SCHEMAS}/{schema['metadata']['name']}", schema, MANAGER)
    return len(schemas)


async def wait_attribution(scraper: Scraper, subject: Kube, timeout: float = 60.0) -> None:
    """Wait until the apiserver classifies the subject's requests with our FlowSchemas.

    APF picks up new FlowSchemas asynchronously; until then the subject's requests would be
    counted under ``service-accounts`` and silently missing from our figures.
    """
    probe = schema_name("get", "namespaces")

    async def counted() -> bool:
        before = (await scraper.snapshot()).dispatched
        await subject.get(NAMESPACE, None, SYSTEM_NAMESPACE)
        after = (await scraper.snapshot()).dispatched
        mine = {k: v for k, v in after.items() if dict(k).get("flow_schema") == probe}
        return any(v > before.get(k, 0) for k, v in mine.items())

    await local_cluster.wait_for(counted, timeout=timeout, interval=0.5, message="APF schemas")


async def remove_attribution(api: Any) -> None:
    """Delete what make_subject and install_flow_schemas created (for a cluster we keep)."""
    await request(
        api,
        "DELETE",
        FLOW_SCHEMAS,
        params={"labelSelector": f"{FLOW_LABEL_KEY}=true"},
        ignore=(404,),
    )
    for path in (
        f"clusterrolebindings/{BINDING}",
        f"clusterrolebindings/{HUB_ROLE}",
        f"clusterroles/{HUB_ROLE}",
    ):
        await request(api, "DELETE", f"{RBAC}/{path}", ignore=(404,))
    await request(api, "DELETE", f"/api/v1/namespaces/{SYSTEM_NAMESPACE}", ignore=(404,))


async def fresh_namespace(kube: Kube, name: str, timeout: float) -> None:
    """Create ``name`` (after removing a leftover of an earlier run) and wait for its default
    ServiceAccount, without which pods are refused."""
    if await kube.get(NAMESPACE, None, name) is not None:
        await delete_namespace(kube, name, timeout)
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await kube.request("POST", NAMESPACE, None, NAMESPACE.url(), content=json.dumps(body))
    await local_cluster.wait_for(
        lambda: kube.get(SERVICE_ACCOUNT, name, "default"),
        timeout=timeout,
        message=f"ServiceAccount {name}/default",
    )


async def begin_namespace_deletion(kube: Kube, name: str) -> None:
    """Delete ``name`` without waiting: the run goes on in a fresh namespace meanwhile.

    Parked objects go quickly (unscheduled pods at once; PVCs once the controller manager has
    removed their protection finalizer, at its own request rate), so the clean-up adds a light,
    steady load to the phases that follow it rather than minutes of waiting.
    """
    try:
        await kube.delete(NAMESPACE, "", name)
    except ApiError as err:
        if err.status != 409:  # 409: already terminating
            raise


async def _volumes_of(kube: Kube, namespace: str) -> int:
    volumes = (await kube.list(PERSISTENT_VOLUME, None)).items
    return sum(
        1 for v in volumes if (v["spec"].get("claimRef") or {}).get("namespace") == namespace
    )


async def delete_namespace(kube: Kube, name: str, timeout: float) -> dict[str, float | int]:
    """Delete ``name`` and wait until it and the volumes of its claims are gone.

    The volumes matter: their clean-up (PV controller, provisioner) would otherwise still be
    running while the next phase is measured. A cluster whose volumes are retained keeps them:
    that wait gives up at the deadline and reports what was left.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await kube.delete(NAMESPACE, "", name)
    except ApiError as err:
        if err.status != 409:  # 409: already terminating
            raise

    async def gone() -> bool:
        return await kube.get(NAMESPACE, None, name) is None

    await local_cluster.wait_for(
        gone, timeout=timeout, interval=0.5, message=f"namespace {name} deleted"
    )
    deleted = loop.time() - started

    async def volumes_gone() -> bool:
        return await _volumes_of(kube, name) == 0

    left = 0
    try:
        await local_cluster.wait_for(
            volumes_gone, timeout=timeout, interval=1.0, message=f"volumes of {name} deleted"
        )
    except TimeoutError:
        left = await _volumes_of(kube, name)
        log.warning("%d volume(s) of namespace %s are still there; going on", left, name)
    return {"namespace_s": deleted, "volumes_s": loop.time() - started, "volumes_left": left}
