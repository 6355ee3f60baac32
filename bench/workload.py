"""What every contender converges: the seed template, N instances, and their rendered objects.

The baselines get exactly the manifests the reconciler sends (rendered by the product's own
renderer and stamped with its annotations), moved to their own namespace. They carry no
ownerReference: no instance exists there to own them, and a dangling owner would make
Kubernetes' garbage collector delete the objects under the baseline's feet.
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
from jupyternetes_ssa.kube import Kube
from jupyternetes_ssa.render import render

EXAMPLES = REPO_ROOT / "examples"
TEMPLATE_NAME = "default-template"
HUB_MANAGER = "jupyterhub-jupyternetes"  # the field manager JupyterHub's spawner uses
ADMIN_MANAGER = "jupyternetes-bench-admin"
CHANGED_IMAGE = "quay.io/jupyter/datascience-notebook:hub-5.2.1-bench"
Manifest = dict[str, Any]


def instance_name(index: int) -> str:
    return f"nb-{index:05d}"


def template(namespace: str, image: str | None = None) -> Manifest:
    """The seed template in ``namespace``; ``image`` replaces the notebook container's image."""
    doc = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
    doc["metadata"] = {"name": TEMPLATE_NAME, "namespace": namespace}
    if image is not None:
        doc["spec"]["pods"][0]["spec"]["containers"][0]["image"] = image
    return doc


def instance(namespace: str, index: int) -> Manifest:
    """A seed instance for user number ``index``: what the hub's spawner would create."""
    doc = yaml.safe_load((EXAMPLES / "seed-instance.yaml").read_text())
    doc.pop("status", None)
    name = instance_name(index)
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["template"] = {"name": TEMPLATE_NAME, "namespace": namespace}
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


def rendered(namespace: str, count: int, image: str | None = None) -> list[list[Manifest]]:
    """Per instance, its objects as the reconciler would send them (PVC first, then the pod)."""
    tmpl = template(namespace, image)
    return [
        [stamped(item) for item in render(tmpl, instance(namespace, i)).items] for i in range(count)
    ]


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


async def create_instances(
    kube: Kube, namespace: str, indices: Iterable[int], concurrency: int = 32
) -> None:
    """Create instances concurrently, as a busy hub's spawners would (server-side apply)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await put(kube, instance(namespace, index), HUB_MANAGER)

    await asyncio.gather(*(one(i) for i in indices))
