"""Kube.watch on the real apiserver through its aiohttp path (the reconciler's, the spawner's):
events whole and in order whatever their size, errors as ApiError, the cache kept by Informer."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import ApiError, Kube, Resource
from jupyternetes_ssa.local_cluster import wait_for

pytestmark = pytest.mark.integration
CONFIGMAP = Resource("v1", "ConfigMap", "configmaps")


def _configmap(namespace: str, name: str, size: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"watch-test": "yes"}},
        "data": {"blob": "x" * size},
    }


async def _events(kube: Kube, namespace: str, rv: str, want: int) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    async for kind, obj in kube.watch(
        CONFIGMAP, namespace, rv, label_selector="watch-test=yes", timeout_seconds=30
    ):
        if kind != "BOOKMARK":
            got.append((kind, obj))
        if len(got) == want:
            break
    return got


async def test_the_watch_takes_the_fast_path(kube):
    assert kube.http is not None  # else this file tests kr8s' path, not ours


async def test_events_larger_than_any_read_buffer_arrive_whole_and_in_order(kube, namespace):
    """A 900 KiB object (near the apiserver's request size limit, far past aiohttp's line limit)
    is one line of the stream, arriving in many reads; small events around it stay apart."""
    listed = await kube.list(CONFIGMAP, namespace, label_selector="watch-test=yes")
    sizes = [10, 900 * 1024, 20, 200 * 1024, 30]
    watching = asyncio.create_task(_events(kube, namespace, listed.resource_version, len(sizes)))
    for i, size in enumerate(sizes):
        await kube.create(_configmap(namespace, f"cm-{i}", size))
    got = await asyncio.wait_for(watching, timeout=60)
    assert [k for k, _ in got] == ["ADDED"] * len(sizes)
    assert [o["metadata"]["name"] for _, o in got] == [f"cm-{i}" for i in range(len(sizes))]
    assert [len(o["data"]["blob"]) for _, o in got] == sizes


async def test_a_refused_watch_is_an_api_error_naming_the_cause(kube, namespace):
    with pytest.raises(ApiError) as err:
        async for _ in kube.watch(CONFIGMAP, namespace, "0", label_selector="a b c"):
            pass
    assert err.value.status == 400
    assert "unable to parse requirement" in err.value.message


async def test_an_informer_on_the_fast_path_follows_changes_and_deletions(kube, namespace):
    store: dict = {}
    informer = Informer(kube, CONFIGMAP, (namespace,), store, lambda *_: None)
    task = asyncio.create_task(informer.run())
    try:
        await wait_for(lambda: informer.synced, timeout=30, message="listed")
        await kube.create(_configmap(namespace, "followed", 10))
        await wait_for(lambda: (namespace, "followed") in store, timeout=30, message="added")
        await kube.apply(_configmap(namespace, "followed", 300 * 1024), field_manager="test")
        await wait_for(
            lambda: len(store[namespace, "followed"]["data"]["blob"]) == 300 * 1024,
            timeout=30,
            message="the change reaches the cache",
        )
        await kube.delete(CONFIGMAP, namespace, "followed")
        await wait_for(lambda: (namespace, "followed") not in store, timeout=30, message="gone")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
