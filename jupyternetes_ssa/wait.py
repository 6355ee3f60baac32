"""Wait for an object to be gone, with a deadline (for re-creating a pod in once mode)."""

from __future__ import annotations

import asyncio

from jupyternetes_ssa.kube import Kube, Resource


async def wait_gone(
    kube: Kube,
    res: Resource,
    namespace: str,
    name: str,
    uid: str | None,
    *,
    timeout: float = 60.0,
    interval: float = 0.5,
) -> bool:
    """True once no object of that name (or only one with another uid) exists."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        live = await kube.get(res, namespace, name)
        if live is None or (uid and live["metadata"].get("uid") != uid):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
