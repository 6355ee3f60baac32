"""Install our CustomResourceDefinitions with server-side apply and wait until they serve."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from jupyternetes_ssa.crds import crd_manifests as load_crds

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
APPLY_HEADERS = {"Content-Type": "application/apply-patch+yaml"}
FIELD_MANAGER = "jupyternetes-ssa-local-cluster"


def apply_requests(crds: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(url, JSON body) of the server-side apply PATCH for each CRD."""
    for crd in crds:
        yield f"{CRD_PATH}/{crd['metadata']['name']}", json.dumps(crd)


def apply_params() -> dict[str, str]:
    return {"fieldManager": FIELD_MANAGER, "force": "true"}


def is_established(crd: dict[str, Any]) -> bool:
    """True once the apiserver serves the CRD's resource (condition Established=True)."""
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


async def install_crds(api: Any, timeout: float = 60.0) -> list[str]:
    """Apply our CRDs through a kr8s async ``Api`` and wait until each is Established."""
    from .waiting import wait_for

    names = []
    for url, body in apply_requests(load_crds()):
        base, name = url.rsplit("/", 1)
        async with api.call_api(
            "PATCH",
            base=base,
            version="",
            url=name,
            content=body,
            headers=APPLY_HEADERS,
            params=apply_params(),
        ):
            names.append(name)

    async def established() -> bool:
        for name in names:
            async with api.call_api("GET", base=CRD_PATH, version="", url=name) as resp:
                if not is_established(resp.json()):
                    return False
        return True

    await wait_for(established, timeout=timeout, message="CRDs Established")
    return names
