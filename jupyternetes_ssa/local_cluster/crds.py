"""Install our CustomResourceDefinitions with server-side apply and wait until they serve."""

from __future__ import annotations

from typing import Any

from jupyternetes_ssa.crds import crd_manifests as load_crds
from jupyternetes_ssa.kube import Kube

from .kube import apply, request
from .waiting import wait_for

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
FIELD_MANAGER = "jupyternetes-ssa-local-cluster"


def is_established(crd: dict[str, Any]) -> bool:
    """True once the apiserver serves the CRD's resource (condition Established=True)."""
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


async def apply_crds(api: Kube | Any) -> list[str]:
    """Server-side apply each of our CRDs; their names."""
    names = []
    for crd in load_crds():
        name = crd["metadata"]["name"]
        await apply(api, f"{CRD_PATH}/{name}", crd, FIELD_MANAGER)
        names.append(name)
    return names


async def all_established(api: Kube | Any, names: list[str]) -> bool:
    for name in names:
        crd = await request(api, "GET", f"{CRD_PATH}/{name}")
        if not is_established(crd or {}):
            return False
    return True


async def install_crds(api: Kube | Any, timeout: float = 60.0) -> list[str]:
    """Apply our CRDs (through a `Kube` or a kr8s async ``Api``) and wait until each serves."""
    names = await apply_crds(api)
    await wait_for(lambda: all_established(api, names), timeout=timeout, message="CRDs Established")
    return names
