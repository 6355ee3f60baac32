"""A hostPath volume provisioner for the default StorageClass ``local``.

Without one, a PVC stays Pending and the scheduler never places a pod that mounts it (the seed
template's notebook pod does). This plays the external-provisioner role: a directory under the
state dir per claim, a PV bound to the claim, removal once released, and naive online expansion.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyternetes_ssa.kube import PVC, Resource

from .kube import Object, list_watch, request

log = logging.getLogger("local-cluster.provisioner")
PROVISIONER = "local-cluster.jupyternetes.io/hostpath"
PROVISIONER_ANNOTATIONS = (
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
)
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
VOLUME = Resource("v1", "PersistentVolume", "persistentvolumes", namespaced=False)


@dataclass
class HostPathProvisioner:
    """Provisions, expands and deletes PVs for claims of our StorageClass (admin credentials)."""

    api: Any
    volumes_dir: Path

    async def run(self) -> None:
        await asyncio.gather(
            list_watch(self.api, PVC, self._claims, self._claim),
            list_watch(self.api, VOLUME, self._volumes, self._volume),
        )

    async def _claims(self, claims: list[Object]) -> None:
        for claim in claims:
            await self._claim("ADDED", claim)

    async def _volumes(self, volumes: list[Object]) -> None:
        for volume in volumes:
            await self._volume("ADDED", volume)

    async def _claim(self, kind: str, claim: Object) -> None:
        if kind == "DELETED" or claim["metadata"].get("deletionTimestamp"):
            return
        annotations = claim["metadata"].get("annotations") or {}
        if not any(annotations.get(a) == PROVISIONER for a in PROVISIONER_ANNOTATIONS):
            return
        try:
            if not claim["spec"].get("volumeName"):
                await self.provision(claim)
            elif claim.get("status", {}).get("phase") == "Bound":
                await self.expand(claim)
        except Exception:
            log.warning("claim %s: provisioning failed", _ref(claim), exc_info=True)

    async def provision(self, claim: Object) -> None:
        """Create a directory and a PV pre-bound to the claim; the PV controller binds both."""
        meta, spec = claim["metadata"], claim["spec"]
        name = f"pvc-{meta['uid']}"
        path = self.volumes_dir / name
        path.mkdir(parents=True, exist_ok=True)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or "",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if await request(self.api, "POST", "/api/v1/persistentvolumes", body=volume, ignore=(409,)):
            log.info("claim %s: provisioned %s at %s", _ref(claim), name, path)

    async def expand(self, claim: Object) -> None:
        """Grow our PV and the claim's reported capacity to the request (hostPath has no size)."""
        wanted = claim["spec"]["resources"]["requests"]["storage"]
        if claim.get("status", {}).get("capacity", {}).get("storage") == wanted:
            return
        volume_path = f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}"
        volume = await request(self.api, "GET", volume_path, ignore=(404,))
        if not volume or not _ours(volume):
            return
        await _merge_patch(self.api, volume_path, {"spec": {"capacity": {"storage": wanted}}})
        meta = claim["metadata"]
        claim_path = f"/api/v1/namespaces/{meta['namespace']}/persistentvolumeclaims/{meta['name']}"
        await _merge_patch(
            self.api, f"{claim_path}/status", {"status": {"capacity": {"storage": wanted}}}
        )
        log.info("claim %s: expanded to %s", _ref(claim), wanted)

    async def _volume(self, kind: str, volume: Object) -> None:
        """Delete our released volumes (reclaim policy Delete) and their directories."""
        if not _ours(volume):
            return
        released = volume.get("status", {}).get("phase") in ("Released", "Failed")
        policy = volume["spec"].get("persistentVolumeReclaimPolicy")
        if kind == "DELETED" or (released and policy == "Delete"):
            name = volume["metadata"]["name"]
            path = f"/api/v1/persistentvolumes/{name}"
            if kind != "DELETED" and await request(self.api, "DELETE", path, ignore=(404,)):
                log.info("volume %s: deleted", name)
            self._remove_dir(volume)

    def _remove_dir(self, volume: Object) -> None:
        """Remove the volume's directory, but never anything outside volumes_dir."""
        path = Path(volume["spec"].get("hostPath", {}).get("path", ""))
        root = self.volumes_dir.resolve()
        if path.is_absolute() and path.resolve().parent == root:
            shutil.rmtree(path, ignore_errors=True)


async def _merge_patch(api: Any, path: str, body: Object) -> None:
    await request(api, "PATCH", path, body=body, content_type="application/merge-patch+json")


def _ours(volume: Object) -> bool:
    return (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER


def _ref(obj: Object) -> str:
    return f"{obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}"
