"""The reconciler's half of the sealed API token: open it, and write it into the instance's Secret.

An instance with `spec.sealedApiToken` gets one more object, the Secret named by the built-in
`{jupyterhub.api_token_secret}` (key `token`, owned by the instance so it goes with it). It is
added to the rendered items, so it is applied all-or-nothing with the instance's other objects,
before its pods. The reconciler never lists or watches Secrets: it GETs this one Secret when it
has not seen it for a resync period, and refuses to take over a Secret that is not this
instance's token Secret.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jupyternetes_ssa import GROUP, VERSION, keys, labels
from jupyternetes_ssa.errors import JupyternetesError
from jupyternetes_ssa.kube import SECRET, ApiError, Kube
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.sealing import Keyring, NoSealingKey, token_secret_name, unseal
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import bucket_of
from jupyternetes_ssa.types import Manifest, Rendered, RenderedItem

if TYPE_CHECKING:
    from jupyternetes_ssa.status import ItemView

log = logging.getLogger(__name__)
# The token Secret's item name: not a DNS label, so never a template item's, and left out of the
# instance's status maps (it is not a template item; the summary and errors still name it).
ITEM = "jupyterhub.api_token"


class TokenSecretConflict(JupyternetesError):
    reason = "TokenSecretConflict"


@dataclass
class Sealing:
    """What one reconciler process knows: its keyring and the token Secrets it last saw."""

    ring: Keyring | None = None
    secrets: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    checked: dict[tuple[str, str], float] = field(default_factory=dict)


async def prepare(kube: Kube, sealing: Sealing, namespace: str, *, create: bool) -> None:
    """At start: load the keyring (creating and publishing it unless `create` is False).

    A failure is logged, not raised: instances without a sealed token are served anyway, and
    those with one report why in their status.
    """
    try:
        sealing.ring = await (keys.ensure if create else keys.load)(kube, namespace)
    except (ApiError, JupyternetesError) as err:
        log.error(
            "sealing keys in namespace %s: %s; instances with a sealed API token cannot be "
            "served until this is fixed (rights: examples/deploy/rbac/sealing-key)",
            namespace,
            err,
        )


async def _keyring(kube: Kube, sealing: Sealing, namespace: str, key_id: object) -> Keyring:
    """The keyring, re-read when an instance names a key we do not hold (a rotation)."""
    if sealing.ring is None or key_id not in sealing.ring.keys:
        try:
            sealing.ring = await keys.load(kube, namespace) or sealing.ring
        except ApiError as err:
            raise NoSealingKey(
                f"cannot read the keyring ({err})",
                subject=f"Secret {namespace}/{keys.KEY_SECRET}",
                fix="grant the reconciler the rights of examples/deploy/rbac/sealing-key",
            ) from None
    return sealing.ring or Keyring()


def token_secret(instance: Manifest, token: str) -> Manifest:
    meta = instance["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_secret_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                labels.INSTANCE: safe_label_value(meta["name"]),
                labels.INSTANCE_NAMESPACE: safe_label_value(meta["namespace"]),
                labels.SHARD_BUCKET: bucket_of(meta["namespace"], meta["name"]),
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "JupyterNotebookInstance",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "type": "Opaque",
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


async def _refresh(kube: Kube, sealing: Sealing, manifest: Manifest, every: float) -> None:
    """Re-read the live Secret once per `every` seconds; refuse one that is not this instance's."""
    meta = manifest["metadata"]
    key = (meta["namespace"], meta["name"])
    now = time.monotonic()
    if key in sealing.secrets and now - sealing.checked.get(key, 0.0) < every:
        return
    live = await kube.get(SECRET, *key)
    sealing.checked[key] = now
    if live is None:
        sealing.secrets.pop(key, None)
        return
    have = live["metadata"].get("labels") or {}
    want = meta["labels"]
    if any(have.get(k) != want[k] for k in (labels.MANAGED_BY, labels.INSTANCE)):
        raise TokenSecretConflict(
            f"Secret {key[0]}/{key[1]} exists and is not this instance's token Secret",
            subject=f"JupyterNotebookInstance {key[0]}/{meta['ownerReferences'][0]['name']}",
            path="spec.sealedApiToken",
            fix="rename or delete that Secret (the reconciler never overwrites a Secret it "
            "did not write)",
        )
    sealing.secrets[key] = live


def template_views(views: list[ItemView]) -> list[ItemView]:
    """The views of the template's own items: the token Secret is not one."""
    return [v for v in views if v.item != ITEM]


async def with_token_secret(
    kube: Kube,
    sealing: Sealing,
    instance: Manifest,
    rendered: Rendered,
    settings: Settings,
    *,
    starting: bool = False,
) -> Rendered:
    """`rendered` plus the token Secret (before the pods) when the instance has a sealed token.

    A server `starting` (no pod of it in our caches) does not read its Secret first: it is
    created with the create-only guard, and one that exists after all (a Secret not ours, or
    the last incarnation's not yet collected) trips it and is read then (apply.py)."""
    sealed = (instance.get("spec") or {}).get("sealedApiToken")
    if sealed is None:
        return rendered
    ns, name = instance["metadata"]["namespace"], instance["metadata"]["name"]
    key_id = sealed.get("keyId") if isinstance(sealed, dict) else None
    ring = await _keyring(kube, sealing, settings.key_namespace, key_id)
    manifest = token_secret(instance, unseal(sealed, ring, ns, name))
    key = (ns, manifest["metadata"]["name"])
    if starting and key not in sealing.secrets:
        sealing.checked[key] = time.monotonic()  # what the create answers is what is there
    else:
        await _refresh(kube, sealing, manifest, settings.resync_seconds)
    item = RenderedItem("otherResources", ITEM, manifest, deletion_policy="Delete")
    first_pod = next((i for i, it in enumerate(rendered.items) if it.section == "pods"), None)
    items = list(rendered.items)
    items.insert(len(items) if first_pod is None else first_pod, item)
    return Rendered(rendered.instance, rendered.template, tuple(items))
