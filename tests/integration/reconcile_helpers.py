"""Shared pieces for the reconciler's integration tests: example objects, a pass, lookups."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from jupyternetes_ssa import labels
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, TEMPLATE, ApiError, Kube
from jupyternetes_ssa.reconcile import reconcile_once
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.types import Summary

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEST_MANAGER = "test-admin"


def seed_template(namespace: str, name: str = "default-template") -> dict:
    template = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
    template["metadata"] = {"name": name, "namespace": namespace}
    return template


def seed_instance(
    namespace: str, name: str, template: str = "default-template", **variables: str
) -> dict:
    instance = yaml.safe_load((EXAMPLES / "seed-instance.yaml").read_text())
    instance.pop("status")
    instance["metadata"] = {"name": name, "namespace": namespace}
    instance["spec"]["template"] = {"name": template, "namespace": namespace}
    instance["spec"]["variables"].update(
        {"jupyternetes.instance.name": name, "jupyternetes.instance.namespace": namespace}
    )
    instance["spec"]["variables"].update(variables)
    return instance


def notebook_container(template: dict) -> dict:
    return template["spec"]["pods"][0]["spec"]["containers"][0]


def edited(template: dict, change) -> dict:
    new = copy.deepcopy(template)
    change(new)
    return new


async def put(kube: Kube, obj: dict) -> dict:
    """Create or update an object as the admin/hub would (its own field manager)."""
    return await kube.apply(obj, field_manager=TEST_MANAGER)


async def once(kube: Kube, namespace: str, **settings: Any) -> Summary:
    """One pass over `namespace`, whose sealing keys live there too (not in `default`)."""
    settings.setdefault("key_namespace", namespace)
    return await reconcile_once(kube, Settings(namespaces=(namespace,), **settings))


def result_for(summary: Summary, name: str):
    return next(r for r in summary.instances if r.instance.name == name)


def actions(summary: Summary, name: str) -> Counter:
    return Counter(o.action for o in result_for(summary, name).outcomes)


async def owned(kube: Kube, namespace: str, instance: str) -> tuple[list[dict], list[dict]]:
    """(pods, pvcs) labelled for the instance."""
    selector = f"{labels.INSTANCE}={instance}"
    pods = await kube.list(POD, namespace, label_selector=selector)
    pvcs = await kube.list(PVC, namespace, label_selector=selector)
    return pods.items, pvcs.items


async def status_of(kube: Kube, namespace: str, name: str) -> dict:
    obj = await kube.get(INSTANCE, namespace, name)
    return (obj or {}).get("status", {})


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


async def get_template(kube: Kube, namespace: str, name: str = "default-template") -> dict:
    return await kube.get(TEMPLATE, namespace, name)


async def pod_security_enforced(kube: Kube, namespace: str) -> bool:
    """Pod Security reads namespace labels from a cache: true once it refuses a privileged pod
    (refused at every enforced level, baseline and restricted)."""
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa-probe", "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
        },
    }
    try:
        await kube.apply(probe, dry_run=True, field_manager="psa-probe")
    except ApiError as err:
        return err.status == 403 and "PodSecurity" in err.message
    return False


def apply_validations(cluster, namespace: str) -> dict[str, set[str]]:
    """fieldValidation of every apply in `namespace`, by resource (the apiserver's audit log)."""
    if cluster.local is None:
        pytest.skip("reads the local cluster's audit log (kind has none for us)")
    out: dict[str, set[str]] = {}
    for line in cluster.local.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event.get("verb") != "patch" or ref.get("namespace") != namespace:
            continue
        query = parse_qs(urlsplit(event["requestURI"]).query)
        if query.get("fieldManager") != ["jupyternetes-ssa"]:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.setdefault(resource, set()).update(query.get("fieldValidation", ["(none)"]))
    return out
