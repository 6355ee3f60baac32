"""What every contender converges: the seed template, N instances, and their rendered objects.

The baselines get exactly the manifests the reconciler sends (rendered by the product's own
renderer and stamped with its annotations), moved to their own namespace. They carry no
ownerReference: no instance exists there to own them, and a dangling owner would make
Kubernetes' garbage collector delete the objects under the baseline's feet.

Most servers are *parked*: the same seed template plus two fields that keep the cluster's own
machinery out of the measurement. The pod names a scheduler that does not exist
(``spec.schedulerName``), so no scheduler, node or kubelet ever touches it, and it is deleted at
once (an unscheduled pod has nothing to terminate). The PVC names a volume that does not exist
(``spec.volumeName``), so no provisioner creates a volume and the PV controller leaves it Pending
without events. Every contender gets the same parked manifests; only the servers that must really
run (continuous mode's new servers, whose statuses follow the pod to Running) use the seed
template as it is.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from bench.machine import REPO_ROOT
from jupyternetes_ssa.apply import stamped
from jupyternetes_ssa.kube import INSTANCE, Kube
from jupyternetes_ssa.render import render

EXAMPLES = REPO_ROOT / "examples"
TEMPLATE_NAME = "default-template"  # the seed template as it is: pods are scheduled and run
PARKED_TEMPLATE = "parked-template"  # the seed template, parked (see above)
PARKED_SCHEDULER = "jupyternetes-bench-parked"  # no such scheduler runs
PARKED_VOLUME = "jupyternetes-bench-parked"  # no such PersistentVolume exists
HUB_MANAGER = "jupyterhub-jupyternetes"  # the field manager JupyterHub's spawner uses
ADMIN_MANAGER = "jupyternetes-bench-admin"
CHANGED_IMAGE = "quay.io/jupyter/datascience-notebook:hub-5.2.1-bench"
Manifest = dict[str, Any]


def instance_name(index: int) -> str:
    return f"nb-{index:05d}"


def template(namespace: str, image: str | None = None, *, parked: bool = True) -> Manifest:
    """The seed template in ``namespace``, parked unless asked otherwise; ``image`` replaces the
    notebook container's image."""
    doc = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
    doc["metadata"] = {"name": PARKED_TEMPLATE if parked else TEMPLATE_NAME, "namespace": namespace}
    pod = doc["spec"]["pods"][0]["spec"]
    if image is not None:
        pod["containers"][0]["image"] = image
    if parked:
        pod["schedulerName"] = PARKED_SCHEDULER
        doc["spec"]["pvcs"][0]["spec"]["volumeName"] = PARKED_VOLUME
    return doc


def instance(namespace: str, index: int, template_name: str = PARKED_TEMPLATE) -> Manifest:
    """A seed instance for user number ``index``: what the hub's spawner would create."""
    doc = yaml.safe_load((EXAMPLES / "seed-instance.yaml").read_text())
    doc.pop("status", None)
    name = instance_name(index)
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["template"] = {"name": template_name, "namespace": namespace}
    doc["spec"]["variables"].update(
        {
            "jupyternetes.instance.name": name,
            "jupyternetes.instance.namespace": namespace,
            "jupyterhub.user.id": str(index),
            "jupyterhub.user.name": f"user{index}",
            "jupyterhub.oauth_client_id": f"jupyterhub-user-user{index}",
        }
    )
    return doc


def rendered(
    namespace: str, indices: Iterable[int], image: str | None = None
) -> list[list[Manifest]]:
    """Per instance, its parked objects as the reconciler would send them (PVC, then pod)."""
    tmpl = template(namespace, image)
    return [[stamped(item) for item in render(tmpl, instance(namespace, i)).items] for i in indices]


def pods_only(groups: list[list[Manifest]]) -> list[list[Manifest]]:
    """The pods of each group: what a delete loop removes (PVCs are kept, as ours keeps them)."""
    return [[m for m in group if m["kind"] == "Pod"] for group in groups]


def write_multidoc(groups: Iterable[list[Manifest]], path: Path) -> Path:
    """One file of all objects for ``kubectl apply -f`` (JSON documents are YAML documents)."""
    path.write_text("\n---\n".join(json.dumps(m) for group in groups for m in group) + "\n")
    return path


def write_groups(groups: list[list[Manifest]], path: Path) -> Path:
    """The create loop's input: a JSON list of per-instance object lists."""
    path.write_text(json.dumps(groups))
    return path


async def put(kube: Kube, obj: Manifest, manager: str = ADMIN_MANAGER) -> Manifest:
    return await kube.apply(copy.deepcopy(obj), field_manager=manager)


async def delete_instances(
    kube: Kube, namespace: str, indices: Iterable[int], concurrency: int = 32
) -> None:
    """Delete instances concurrently, as a hub stopping servers would."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await kube.delete(INSTANCE, namespace, instance_name(index))

    await asyncio.gather(*(one(i) for i in indices))
