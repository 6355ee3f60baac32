"""The reconciler's sealing keys in the cluster: a Secret only it reads, a ConfigMap anyone may.

Both live in the reconciler's own namespace (`--key-namespace`). The Secret holds every private
key still accepted (so a rotation never breaks a running server) and which one is current; the
ConfigMap publishes the current public key, which the spawner reads before each start.
The reconciler creates the Secret at its first start; `jupyternetes-ssa sealing-key` rotates
and retires keys.
"""

from __future__ import annotations

import base64
import logging

from jupyternetes_ssa import sealing
from jupyternetes_ssa.kube import SECRET, ApiError, Kube, Resource
from jupyternetes_ssa.sealing import Keyring, NoSealingKey, PublicKey
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)
CONFIGMAP = Resource("v1", "ConfigMap", "configmaps")
KEY_SECRET = "jupyternetes-ssa-sealing-keys"
PUBLIC_CONFIGMAP = "jupyternetes-ssa-public-key"
DATA_KEY = "keys.json"
LABELS = {"app.kubernetes.io/part-of": "jupyternetes-ssa"}


def _secret_where(namespace: str) -> str:
    return f"Secret {namespace}/{KEY_SECRET}"


def _keyring_of(secret: Manifest) -> Keyring:
    where = _secret_where(secret["metadata"]["namespace"])
    text = base64.b64decode((secret.get("data") or {}).get(DATA_KEY, "")).decode()
    return sealing.load_keyring(text, where)


def _secret_body(namespace: str, ring: Keyring, resource_version: str = "") -> Manifest:
    meta = {"name": KEY_SECRET, "namespace": namespace, "labels": LABELS}
    if resource_version:
        meta["resourceVersion"] = resource_version
    encoded = base64.b64encode(sealing.dump_keyring(ring).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {DATA_KEY: encoded},
    }


async def load(kube: Kube, namespace: str) -> Keyring | None:
    """The keyring, or None when the reconciler has not created it yet."""
    secret = await kube.get(SECRET, namespace, KEY_SECRET)
    return None if secret is None else _keyring_of(secret)


async def ensure(kube: Kube, namespace: str) -> Keyring:
    """The keyring, created with one fresh key if absent (two replicas racing: one wins)."""
    ring = await load(kube, namespace)
    if ring is None:
        kid, private = sealing.generate()
        try:
            await kube.create(_secret_body(namespace, Keyring({kid: private}, kid)))
            log.info("created sealing key %s in %s", kid, _secret_where(namespace))
        except ApiError as err:
            if err.status != 409:
                raise
        ring = await load(kube, namespace)
        assert ring is not None  # created just now, by us or by the replica that won
    await publish(kube, namespace, ring.public())
    return ring


async def publish(kube: Kube, namespace: str, public: PublicKey) -> None:
    """Make the public ConfigMap hold `public` (written only when it differs)."""
    data = sealing.public_key_data(public)
    live = await kube.get(CONFIGMAP, namespace, PUBLIC_CONFIGMAP)
    if live is not None and live.get("data") == data:
        return
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PUBLIC_CONFIGMAP, "namespace": namespace, "labels": LABELS},
        "data": data,
    }
    if live is None:
        try:
            await kube.create(body)
        except ApiError as err:
            if err.status != 409:
                raise
            return await publish(kube, namespace, public)  # another replica (a shard) was first
    else:
        body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        await kube.replace(body)
    log.info(
        "published sealing key %s in ConfigMap %s/%s", public.key_id, namespace, PUBLIC_CONFIGMAP
    )


async def _load_existing(kube: Kube, namespace: str) -> tuple[Keyring, str]:
    secret = await kube.get(SECRET, namespace, KEY_SECRET)
    if secret is None:
        raise NoSealingKey(
            "does not exist",
            subject=_secret_where(namespace),
            fix="start the reconciler once (it creates it), or check --key-namespace",
        )
    return _keyring_of(secret), secret["metadata"]["resourceVersion"]


async def rotate(kube: Kube, namespace: str) -> Keyring:
    """Add a new key and make it current; every older key keeps opening what it sealed."""
    ring, version = await _load_existing(kube, namespace)
    kid, private = sealing.generate()
    ring = Keyring({**ring.keys, kid: private}, kid)
    await kube.replace(_secret_body(namespace, ring, version))  # 409 if it moved meanwhile
    await publish(kube, namespace, ring.public())
    return ring


async def retire(kube: Kube, namespace: str, key_id: str) -> Keyring:
    """Remove an old key (never the current one)."""
    ring, version = await _load_existing(kube, namespace)
    where = _secret_where(namespace)
    if key_id not in ring.keys:
        raise NoSealingKey(
            f"holds no key {key_id!r} (it holds {', '.join(sorted(ring.keys))})",
            subject=where,
            fix="name one of those",
        )
    if key_id == ring.current:
        raise NoSealingKey(
            f"{key_id} is the current key",
            subject=where,
            fix="rotate first (`jupyternetes-ssa sealing-key rotate`), then retire the old key",
        )
    ring = Keyring({k: v for k, v in ring.keys.items() if k != key_id}, ring.current)
    await kube.replace(_secret_body(namespace, ring, version))
    return ring


async def read_public_key(kube: Kube, namespace: str) -> PublicKey:
    """The hub's side: the published public key, or NoSealingKey saying what to do."""
    where = f"ConfigMap {namespace}/{PUBLIC_CONFIGMAP}"
    try:
        live = await kube.get(CONFIGMAP, namespace, PUBLIC_CONFIGMAP)
    except ApiError as err:
        raise NoSealingKey(
            f"cannot be read ({err})",
            subject=where,
            fix="install the reconciler's sealing-key Role (examples/deploy/rbac/sealing-key), "
            "and set c.JupyternetesSpawner.sealing_key_namespace to the reconciler's namespace",
        ) from None
    if live is None:
        raise NoSealingKey(
            "does not exist: the reconciler has not published its sealing key yet",
            subject=where,
            fix="start the reconciler (it publishes the key at start), or set "
            "c.JupyternetesSpawner.sealing_key_namespace to the reconciler's namespace",
        )
    return sealing.parse_public_key(live.get("data") or {}, where)
