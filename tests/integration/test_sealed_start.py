"""A server with a sealed token starts without reading its token Secret first (the create-only
guard tells if one exists after all), against a real apiserver: a start costs its writes only,
an existing server's Secret is still verified, and a Secret left by the last incarnation of the
same name, or one that is not ours, is found by the guard and judged as before."""

from __future__ import annotations

import base64
import json

import pytest
from reconcile_helpers import once, put, result_for
from test_sealed_token import TOKEN, sealed_instance, setup

from jupyternetes_ssa import sealing
from jupyternetes_ssa.kube import INSTANCE, POD, SECRET, Kube
from jupyternetes_ssa.ownership import OWNER

pytestmark = pytest.mark.integration


class SecretReads(Kube):
    """Counts GETs of token Secrets. A spy on real requests: each one reaches the apiserver."""

    def __init__(self, api):
        super().__init__(api)
        self.reads = 0

    async def request(self, method, res, namespace, url, **kwargs):
        if method == "GET" and res is SECRET and url.endswith("-hub-token"):
            self.reads += 1
        return await super().request(method, res, namespace, url, **kwargs)


async def test_a_start_reads_no_secret_and_a_running_server_still_has_it_verified(
    cluster, kube: Kube, namespace: str
):
    public = await setup(kube, namespace)
    await put(
        kube, sealed_instance(namespace, "ann", sealing.seal(TOKEN, public, namespace, "ann"))
    )

    spy = SecretReads(cluster.api)
    first = await once(spy, namespace, key_namespace=namespace)

    assert result_for(first, "ann").error == ""
    assert spy.reads == 0, "a start creates its Secret without reading it first"
    secret = await kube.get(SECRET, namespace, "ann-hub-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN

    await kube.request(  # tampered with while the server runs
        "PATCH",
        SECRET,
        namespace,
        SECRET.url("ann-hub-token"),
        content=json.dumps({"data": {"token": base64.b64encode(b"forged").decode()}}).encode(),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    again = await once(spy, namespace, key_namespace=namespace)

    assert result_for(again, "ann").error == ""
    assert spy.reads == 1, "a running server's Secret is read (verified) once per pass"
    secret = await kube.get(SECRET, namespace, "ann-hub-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN, "put back"


async def test_the_last_incarnations_secret_is_found_by_the_guard_and_taken_over(
    cluster, kube: Kube, namespace: str
):
    public = await setup(kube, namespace)
    sealed = sealing.seal(TOKEN, public, namespace, "ann")
    await put(kube, sealed_instance(namespace, "ann", sealed))
    assert result_for(await once(kube, namespace, key_namespace=namespace), "ann").error == ""
    old = await kube.get(SECRET, namespace, "ann-hub-token")
    await kube.request(  # Kubernetes' garbage collector has not come to it yet
        "PATCH",
        SECRET,
        namespace,
        SECRET.url("ann-hub-token"),
        content=json.dumps([{"op": "remove", "path": "/metadata/ownerReferences"}]).encode(),
        headers={"Content-Type": "application/json-patch+json"},
    )
    await kube.delete(POD, namespace, "ann-notebook")
    await kube.delete(INSTANCE, namespace, "ann")
    new = await put(kube, sealed_instance(namespace, "ann", sealed))

    spy = SecretReads(cluster.api)
    summary = await once(spy, namespace, key_namespace=namespace)

    assert result_for(summary, "ann").error == ""
    assert spy.reads == 1, "the guard tripped and the Secret was read once"
    secret = await kube.get(SECRET, namespace, "ann-hub-token")
    assert secret["metadata"]["uid"] == old["metadata"]["uid"]
    assert secret["metadata"]["annotations"][OWNER].endswith(new["metadata"]["uid"])
    assert await kube.get(POD, namespace, "ann-notebook") is not None
