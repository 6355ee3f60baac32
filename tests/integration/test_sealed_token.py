"""The sealed API token against a real apiserver: the reconciler's keys, the token Secret it writes
from `spec.sealedApiToken`, and every way a sealed token is refused (status says why, nothing of
the instance is applied, the other instances carry on)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid

import pytest
from reconcile_helpers import actions, condition, once, put, result_for, seed_template, status_of

from jupyternetes_ssa import FIELD_MANAGER, keys, sealing
from jupyternetes_ssa.kube import INSTANCE, POD, SECRET, Kube
from jupyternetes_ssa.local_cluster import wait_for

pytestmark = pytest.mark.integration
TOKEN = "0123456789abcdef0123456789abcdef"


def token_template(namespace: str) -> dict:
    """The seed template with its token taken from the Secret the reconciler writes."""
    template = seed_template(namespace)
    container = template["spec"]["pods"][0]["spec"]["containers"][0]
    for env in container["env"]:
        if env.get("value") == "{jupyterhub.api_token}":
            del env["value"]
            env["valueFrom"] = {
                "secretKeyRef": {"name": "{jupyterhub.api_token_secret}", "key": "token"}
            }
    return template


def sealed_instance(namespace: str, name: str, sealed: dict | None) -> dict:
    spec: dict = {
        "template": {"name": "default-template", "namespace": namespace},
        "variables": {
            "jupyterhub.user.id": "1",
            "jupyterhub.user.name": name,
            "jupyterhub.namespace": namespace,
            "jupyterhub.oauth_client_id": f"jupyterhub-user-{name}",
        },
    }
    if sealed is not None:
        spec["sealedApiToken"] = sealed
    return {
        "apiVersion": INSTANCE.api_version,
        "kind": INSTANCE.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def setup(kube: Kube, namespace: str) -> sealing.PublicKey:
    """The template, and the reconciler's keys as its first pass creates them."""
    await put(kube, token_template(namespace))
    await once(kube, namespace, key_namespace=namespace)
    return await keys.read_public_key(kube, namespace)


async def test_the_first_pass_creates_and_publishes_a_key_and_later_passes_keep_it(
    kube: Kube, namespace: str
):
    public = await setup(kube, namespace)
    secret = await kube.get(SECRET, namespace, keys.KEY_SECRET)

    await once(kube, namespace, key_namespace=namespace)

    assert (await kube.get(SECRET, namespace, keys.KEY_SECRET))["metadata"]["resourceVersion"] == (
        secret["metadata"]["resourceVersion"]
    )
    assert (await keys.read_public_key(kube, namespace)).key_id == public.key_id
    ring = await keys.load(kube, namespace)
    assert list(ring.keys) == [public.key_id] and ring.current == public.key_id
    configmap = await kube.get(keys.CONFIGMAP, namespace, keys.PUBLIC_CONFIGMAP)
    for made in (secret, configmap):  # named as ours, not after our User-Agent
        assert {m["manager"] for m in made["metadata"]["managedFields"]} == {FIELD_MANAGER}


async def test_a_dry_run_creates_no_key_and_the_hub_is_told_what_is_missing(
    kube: Kube, namespace: str
):
    await once(kube, namespace, dry_run=True)

    assert await kube.get(SECRET, namespace, keys.KEY_SECRET) is None
    with pytest.raises(sealing.NoSealingKey) as err:
        await keys.read_public_key(kube, namespace)
    assert f"ConfigMap {namespace}/jupyternetes-ssa-public-key" in str(err.value)
    assert "sealing_key_namespace" in str(err.value)


async def test_a_sealed_token_becomes_a_secret_owned_by_its_instance_and_nowhere_else(
    kube: Kube, namespace: str
):
    public = await setup(kube, namespace)
    await put(
        kube,
        sealed_instance(namespace, "ann", sealing.seal(TOKEN, public, namespace, "ann")),
    )

    summary = await once(kube, namespace, key_namespace=namespace)

    assert result_for(summary, "ann").converged, result_for(summary, "ann").error
    instance = await kube.get(INSTANCE, namespace, "ann")
    secret = await kube.get(SECRET, namespace, "ann-hub-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["uid"] == instance["metadata"]["uid"] and owner["controller"] is True
    pod = await kube.get(POD, namespace, "ann-notebook")
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for e in pod["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    ]
    assert {"name": "ann-hub-token", "key": "token"} in refs
    assert TOKEN not in json.dumps(instance) and TOKEN not in json.dumps(pod)
    status = await status_of(kube, namespace, "ann")
    assert TOKEN not in json.dumps(status)

    again = await once(kube, namespace, key_namespace=namespace)

    assert actions(again, "ann") == {"unchanged": 3}  # PVC, token Secret, pod: no write

    await kube.delete(INSTANCE, namespace, "ann")
    await wait_for(
        lambda: _gone(kube, namespace, "ann-hub-token"),
        timeout=90,
        message="the token Secret goes with its instance",
    )


async def _gone(kube: Kube, namespace: str, name: str) -> bool:
    return await kube.get(SECRET, namespace, name) is None


async def _refused(kube: Kube, namespace: str, name: str, reason: str) -> dict:
    """The instance's status says why, and nothing of it was applied."""
    summary = await once(kube, namespace, key_namespace=namespace)
    result = result_for(summary, name)
    assert result.reason == reason, result.error
    degraded = condition(await status_of(kube, namespace, name), "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == reason, degraded
    assert await kube.get(SECRET, namespace, f"{name}-hub-token") is None
    assert await kube.get(POD, namespace, f"{name}-notebook") is None
    return degraded


async def test_a_ciphertext_replayed_into_another_instance_is_refused_and_the_original_works(
    kube: Kube, namespace: str
):
    public = await setup(kube, namespace)
    sealed = sealing.seal(TOKEN, public, namespace, "ann")
    await put(kube, sealed_instance(namespace, "ann", sealed))
    await put(kube, sealed_instance(namespace, "eve", sealed))

    degraded = await _refused(kube, namespace, "eve", "SealedForAnotherInstance")

    assert f"sealed for instance {namespace}/ann" in degraded["message"]
    assert TOKEN not in degraded["message"]
    secret = await kube.get(SECRET, namespace, "ann-hub-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN


async def test_a_tampered_ciphertext_is_refused(kube: Kube, namespace: str):
    public = await setup(kube, namespace)
    sealed = sealing.seal(TOKEN, public, namespace, "ann")
    raw = bytearray(base64.b64decode(sealed["ciphertext"]))
    raw[-1] ^= 1
    sealed["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    await put(kube, sealed_instance(namespace, "ann", sealed))

    degraded = await _refused(kube, namespace, "ann", "SealedTokenTampered")

    assert "spec.sealedApiToken.ciphertext" in degraded["message"]


async def test_a_token_sealed_to_a_key_the_reconciler_never_had_is_refused(
    kube: Kube, namespace: str
):
    await setup(kube, namespace)
    kid, stranger = sealing.generate()
    sealed = sealing.seal(TOKEN, sealing.PublicKey(kid, stranger.public_key()), namespace, "ann")
    await put(kube, sealed_instance(namespace, "ann", sealed))

    degraded = await _refused(kube, namespace, "ann", "SealingKeyUnknown")

    assert kid in degraded["message"]


async def test_without_a_key_the_instance_says_so_and_others_carry_on(kube: Kube, namespace: str):
    await put(kube, token_template(namespace))
    kid, stranger = sealing.generate()
    sealed = sealing.seal(TOKEN, sealing.PublicKey(kid, stranger.public_key()), namespace, "ann")
    await put(kube, sealed_instance(namespace, "ann", sealed))
    await put(kube, seed_template(namespace, "plain"))
    plain = sealed_instance(namespace, "bob", None)
    plain["spec"]["template"]["name"] = "plain"
    plain["spec"]["variables"]["jupyterhub.api_token"] = TOKEN  # the documented plain opt-in
    await put(kube, plain)
    nowhere = f"missing-{uuid.uuid4().hex[:6]}"  # a key namespace that does not exist

    summary = await once(kube, namespace, key_namespace=nowhere)

    assert result_for(summary, "ann").reason == "SealingKeyMissing"
    assert "no sealing key" in result_for(summary, "ann").error
    assert result_for(summary, "bob").converged, result_for(summary, "bob").error
    assert await kube.get(POD, namespace, "bob-notebook") is not None


async def test_rotation_keeps_old_tokens_working_and_retiring_too_early_is_reported(
    kube: Kube, namespace: str
):
    old = await setup(kube, namespace)
    await put(kube, sealed_instance(namespace, "ann", sealing.seal(TOKEN, old, namespace, "ann")))
    assert result_for(await once(kube, namespace, key_namespace=namespace), "ann").converged

    ring = await keys.rotate(kube, namespace)
    new = await keys.read_public_key(kube, namespace)

    assert new.key_id == ring.current != old.key_id and set(ring.keys) == {old.key_id, new.key_id}
    await put(
        kube, sealed_instance(namespace, "bob", sealing.seal("b" * 32, new, namespace, "bob"))
    )
    summary = await once(kube, namespace, key_namespace=namespace)
    assert actions(summary, "ann") == {"unchanged": 3}
    assert result_for(summary, "bob").converged, result_for(summary, "bob").error
    with pytest.raises(sealing.NoSealingKey):
        await keys.retire(kube, namespace, new.key_id)  # never the current key

    await keys.retire(kube, namespace, old.key_id)
    summary = await once(kube, namespace, key_namespace=namespace)

    refused = result_for(summary, "ann")
    assert refused.reason == "SealingKeyUnknown", refused.error
    assert await kube.get(POD, namespace, "ann-notebook") is not None  # nothing is deleted
    assert await kube.get(SECRET, namespace, "ann-hub-token") is not None
    assert result_for(summary, "bob").converged


async def test_a_secret_that_is_not_the_instances_is_never_taken_over(kube: Kube, namespace: str):
    public = await setup(kube, namespace)
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ann-hub-token", "namespace": namespace},
            "stringData": {"token": "the admin's own"},
        },
        field_manager="kubectl-create",
    )
    await put(
        kube, sealed_instance(namespace, "ann", sealing.seal(TOKEN, public, namespace, "ann"))
    )

    summary = await once(kube, namespace, key_namespace=namespace)

    assert result_for(summary, "ann").reason == "TokenSecretConflict"
    secret = await kube.get(SECRET, namespace, "ann-hub-token")
    assert base64.b64decode(secret["data"]["token"]) == b"the admin's own"
    assert not secret["metadata"].get("ownerReferences")
    assert await kube.get(POD, namespace, "ann-notebook") is None


async def cli(cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    argv = [sys.executable, "-m", "jupyternetes_ssa", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=180
    )


async def test_the_sealing_key_command_shows_rotates_and_retires_only_unused_keys(
    cluster, kube: Kube, namespace: str
):
    old = await setup(kube, namespace)
    await put(kube, sealed_instance(namespace, "ann", sealing.seal(TOKEN, old, namespace, "ann")))
    ns = ("--key-namespace", namespace)

    shown = await cli(cluster, "sealing-key", "show", *ns)
    rotated = await cli(cluster, "sealing-key", "rotate", *ns)
    new = (await keys.load(kube, namespace)).current
    refused = await cli(cluster, "sealing-key", "retire", old.key_id, *ns)
    current = await cli(cluster, "sealing-key", "retire", new, "--force", *ns)

    assert shown.returncode == 0 and f"{old.key_id} (current): 1 instance(s)" in shown.stdout
    assert rotated.returncode == 0 and f"new current key {new}" in rotated.stdout
    assert (await keys.read_public_key(kube, namespace)).key_id == new != old.key_id
    assert refused.returncode == 1 and "1 instance(s) still use key" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert current.returncode == 1 and "is the current key" in current.stderr
    assert set((await keys.load(kube, namespace)).keys) == {old.key_id, new}

    await kube.delete(INSTANCE, namespace, "ann")
    await wait_for(
        lambda: _instance_gone(kube, namespace, "ann"), timeout=60, message="ann deleted"
    )
    retired = await cli(cluster, "sealing-key", "retire", old.key_id, *ns)

    assert retired.returncode == 0, retired.stderr
    assert set((await keys.load(kube, namespace)).keys) == {new}


async def _instance_gone(kube: Kube, namespace: str, name: str) -> bool:
    return await kube.get(INSTANCE, namespace, name) is None
