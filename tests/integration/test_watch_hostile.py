"""adv10: Kube.watch on its aiohttp path under a hostile cluster: re-authentication closing the
session under the watches, an account's tokens invalidated and refreshed, compacted versions
(410), many watches at once. Real apiserver throughout."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import Kube, Resource
from jupyternetes_ssa.local_cluster import wait_for

pytestmark = pytest.mark.integration
CONFIGMAP = Resource("v1", "ConfigMap", "configmaps")
RULES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]


def _configmap(namespace: str, name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"watch-test": "yes"}},
        "data": {"a": "b"},
    }


@contextlib.asynccontextmanager
async def _running(*informers: Informer):
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for t in tasks:  # an informer never ends by itself: a crash would show here
            assert t.cancelled(), t


async def test_reauthentication_cuts_the_watches_of_its_session_and_they_resume(
    cluster, kube, namespace
):
    """Kube._reauthenticate (any 401 of any request does it) closed the aiohttp session every
    watch of the client streams on: the watches hung, silent, past their read timeout (330 s
    here; still hung after 400 s), informers synced. Now each goes on, or ends and resumes:
    every informer delivers what happens after."""
    stores = [{}, {}, {}]
    informers = [
        Informer(kube, CONFIGMAP, (namespace,), s, lambda *_: None, timeout_seconds=300)
        for s in stores
    ]
    async with _running(*informers) as tasks:
        await wait_for(lambda: all(i.synced for i in informers), timeout=30, message="listed")
        await wait_for(
            lambda: (
                kube.http.session is not None and len(kube.http.session.connector._acquired) >= 3
            ),
            timeout=30,
            message="three watches streaming",
        )
        await kube._reauthenticate()
        await cluster.kube.create(_configmap(namespace, "after-reauth"))
        await wait_for(
            lambda: all((namespace, "after-reauth") in s for s in stores),
            timeout=20,
            message="every informer sees the change made after the session was closed",
        )
        assert not any(t.done() for t in tasks)
        await wait_for(lambda: all(i.synced for i in informers), timeout=30, message="synced")


async def test_an_informer_recovers_once_its_accounts_token_is_refused_and_refreshed(
    cluster, namespace, sa_kubeconfig
):
    """The watch meets the 401 (kr8s used to re-authenticate inside its call; the aiohttp watch
    raises ApiError(401)); the informer's re-list goes through Kube.list, which re-reads the
    kubeconfig. The watch is short (3 s) so that it must be opened again with the dead token."""
    from test_hostile_scale import _refused, _rotate_token

    path = await sa_kubeconfig(RULES, name="watcher")
    kube = await Kube.connect(kubeconfig=str(path))
    assert kube.http is not None
    store: dict = {}
    informer = Informer(kube, CONFIGMAP, (namespace,), store, lambda *_: None, timeout_seconds=3)
    old = kube.api.auth.token
    try:
        async with _running(informer):
            await wait_for(lambda: informer.synced, timeout=30, message="listed")
            relists = informer.relists
            await _rotate_token(cluster, namespace, "watcher", path)
            await wait_for(
                lambda: _refused(kube, old, f"/api/v1/namespaces/{namespace}/configmaps"),
                timeout=90,
                message="old token refused",
            )
            await wait_for(  # the next watch (3 s) meets the 401; the re-list re-reads
                lambda: kube.api.auth.token != old, timeout=60, message="credentials re-read"
            )
            await cluster.kube.create(_configmap(namespace, "after-rotation"))
            await wait_for(
                lambda: (namespace, "after-rotation") in store,
                timeout=60,
                message="the change made after the rotation reaches the cache",
            )
            await wait_for(lambda: informer.synced, timeout=60, message="synced again")
            assert informer.relists > relists  # it went through the re-list (Kube.list)
    finally:
        if kube.http is not None:
            await kube.http.close()


async def test_a_watch_left_early_lets_its_connection_go(cluster, kube, namespace):
    """A consumer that stops reading (breaks out, or an ERROR event raised inside Kube.watch)
    leaves the stream to be finalized: its connection is released, and a session retired by a
    re-authentication meanwhile is closed once its last watch is let go."""
    listed = await kube.list(CONFIGMAP, namespace)
    await cluster.kube.create(_configmap(namespace, "one"))
    session = None
    async for kind, _ in kube.watch(CONFIGMAP, namespace, listed.resource_version):
        session = kube.http.session
        assert kind == "ADDED"
        await kube._reauthenticate()  # retired: in use by this watch, closed when it ends
        assert not session.closed
        break
    await wait_for(lambda: session.closed, timeout=10, message="the retired session closed")
    assert not kube.http._users and not kube.http._retired


async def test_many_watches_on_one_client_all_deliver(cluster, kube, namespace):
    """limit=0: a reconciler of many namespaces holds a watch per namespace and kind, each a
    connection for minutes; the 101st must not wait for a free one (aiohttp's default pool
    holds 100)."""
    count = 120
    listed = await kube.list(CONFIGMAP, namespace)
    seen: set[int] = set()

    async def one(i: int) -> None:
        async for kind, obj in kube.watch(
            CONFIGMAP, namespace, listed.resource_version, timeout_seconds=60
        ):
            if kind == "ADDED" and obj["metadata"]["name"] == "for-all":
                seen.add(i)
                return

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    try:
        await wait_for(
            lambda: kube.http._users.get(kube.http.session, 0) >= count,
            timeout=60,
            message="every watch streaming",
        )
        await cluster.kube.create(_configmap(namespace, "for-all"))
        await wait_for(lambda: len(seen) == count, timeout=60, message="every watch delivers")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_pod_deleted_after_a_reauthentication_is_recreated(cluster, namespace):
    """The reconciler end to end: any 401 re-authenticates the client its informers share.
    Before adv10 that closed the aiohttp session under every watch, which then hung silent,
    past their read timeout, with the informers still synced (/healthz fine): a pod deleted
    afterwards was never re-created, a status never updated, until the process restarted."""
    from reconcile_helpers import put, seed_instance, seed_template, status_of
    from test_controller import running, settings_for

    from jupyternetes_ssa.kube import POD

    kube = Kube(cluster.api)  # the reconciler's own client and session
    await put(cluster.kube, seed_template(namespace))
    await put(cluster.kube, seed_instance(namespace, "bob"))

    async def running_phase() -> bool:
        return (await status_of(cluster.kube, namespace, "bob")).get("phase") == "Running"

    try:
        async with running(kube, settings_for(namespace)):
            await wait_for(running_phase, timeout=60, message="bob Running")
            uid = (await cluster.kube.get(POD, namespace, "bob-notebook"))["metadata"]["uid"]
            await kube._reauthenticate()  # what a 401 on any of its requests does
            await cluster.kube.delete(POD, namespace, "bob-notebook")

            async def replaced() -> bool:
                pod = await cluster.kube.get(POD, namespace, "bob-notebook")
                return bool(pod) and pod["metadata"]["uid"] != uid

            await wait_for(replaced, timeout=60, message="the deleted pod re-created")
            await wait_for(running_phase, timeout=60, message="bob Running again")
    finally:
        if kube.http is not None:
            await kube.http.close()


async def test_the_hubs_shared_instance_watch_follows_changes_after_a_reauthentication(
    cluster, namespace
):
    """spawner.InstanceWatch: one watch per namespace for every spawner of the hub, on the
    hub's one client. A 401 met by any spawner's request re-authenticates that client; the
    watch must still deliver, or every later spawn waits for a Ready it is never told of."""
    from reconcile_helpers import put, seed_instance

    from jupyternetes_ssa.spawner import InstanceWatch

    kube = Kube(cluster.api)  # the hub's client
    try:
        watch = await InstanceWatch.get(kube, "adv10-hub", namespace)
        await kube._reauthenticate()
        await put(cluster.kube, seed_instance(namespace, "carol"))
        await wait_for(
            lambda: watch.instance("carol") is not None,
            timeout=20,
            message="the new instance reaches the hub's watch",
        )
        assert not watch._task.done()
    finally:
        InstanceWatch._shared.pop((id(asyncio.get_running_loop()), "adv10-hub", namespace), None)
        if "watch" in locals():
            watch._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch._task
        if kube.http is not None:
            await kube.http.close()
