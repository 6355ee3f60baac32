"""Narrow identities for tests: a ServiceAccount, a Role with given rules, and a kubeconfig.

Tests of least privilege need credentials that are *not* cluster-admin. The token comes from the
TokenRequest API (``serviceaccounts/<name>/token``), exactly as a pod's projected token would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .kube import Object, apply, request
from .waiting import wait_for

MANAGER = "jupyternetes-ssa-tests"


async def grant(api: Any, namespace: str, name: str, rules: list[Object]) -> None:
    """Create (or update) ServiceAccount ``name`` bound to a Role holding exactly ``rules``."""
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    meta = {"name": name, "namespace": namespace}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}
    await apply(api, f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}", account, MANAGER)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": rules,
    }
    await apply(api, f"{base}/roles/{name}", role, MANAGER)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    await apply(api, f"{base}/rolebindings/{name}", binding, MANAGER)


async def request_token(api: Any, namespace: str, name: str, seconds: int = 3600) -> str:
    """A bound token for the ServiceAccount via the TokenRequest API."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds},
    }
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
    answer = await request(api, "POST", path, body=body)
    assert answer is not None
    return answer["status"]["token"]


async def can(api: Any, user: str, namespace: str, verb: str, resource: str, group: str) -> bool:
    """Ask the apiserver (SubjectAccessReview) whether ``user`` may do ``verb`` on ``resource``."""
    account_namespace = user.split(":")[2] if user.startswith("system:serviceaccount:") else ""
    groups = ["system:authenticated", "system:serviceaccounts"]
    if account_namespace:
        groups.append(f"system:serviceaccounts:{account_namespace}")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "group": group,
                "resource": resource,
            },
        },
    }
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    answer = await request(api, "POST", path, body=review)
    return bool(answer and answer["status"].get("allowed"))


def token_kubeconfig(admin_kubeconfig: Path, token: str, out: Path, namespace: str) -> Path:
    """A kubeconfig for the same cluster (server, CA as in the admin one) using ``token``."""
    config = yaml.safe_load(admin_kubeconfig.read_text())
    current = config.get("current-context")
    context = next(c for c in config["contexts"] if c["name"] == current)["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    narrow = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "narrow", "cluster": cluster}],
        "users": [{"name": "narrow", "user": {"token": token}}],
        "contexts": [
            {
                "name": "narrow",
                "context": {"cluster": "narrow", "user": "narrow", "namespace": namespace},
            }
        ],
        "current-context": "narrow",
    }
    out.write_text(yaml.safe_dump(narrow, sort_keys=False))
    out.chmod(0o600)
    return out


async def service_account_kubeconfig(
    api: Any,
    admin_kubeconfig: Path,
    namespace: str,
    rules: list[Object],
    out: Path,
    name: str = "narrow",
) -> Path:
    """Grant ``rules`` to a new ServiceAccount and write a kubeconfig acting as it.

    Waits until RBAC grants the first rule, so callers need not race the authorizer's cache.
    """
    await grant(api, namespace, name, rules)
    user = f"system:serviceaccount:{namespace}:{name}"
    if rules:
        first = rules[0]
        group, resource, verb = first["apiGroups"][0], first["resources"][0], first["verbs"][0]

        async def granted() -> bool:
            return await can(api, user, namespace, verb, resource, group)

        await wait_for(granted, timeout=30, message=f"RBAC to grant {verb} {resource} to {user}")
    token = await request_token(api, namespace, name)
    return token_kubeconfig(admin_kubeconfig, token, out, namespace)
