"""Bring a shard's strays back into its sight: objects of ours outside its buckets' selection.

A continuous shard whose N divides 256 lists and watches only its buckets (shard.py). An object
it owns (by its owner record) but whose bucket label says otherwise, made by a release before
buckets or relabelled by hand, is then invisible to it: never applied to, collected or purged.
Each such object is found by listing the complement of the shard's selection and gets its
bucket label back (a merge patch of that one label, with its resourceVersion as precondition, by
a field manager of its own); the watch then delivers it like any other. When: at start when
objects without the label exist, at every resync, and for an instance being purged.
"""

from __future__ import annotations

import asyncio
import json
import logging

from jupyternetes_ssa import labels
from jupyternetes_ssa.kube import ApiError, Kube, NotLeading, Resource
from jupyternetes_ssa.ownership import disowned, managed_by_us
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import bucket_of, instance_key
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)
RELABEL_MANAGER = "jupyternetes-ssa-relabel"


def outside(settings: Settings, instance_label: str | None = None) -> str:
    """The selector of our objects outside the shard's buckets (unlabelled ones included)."""
    buckets = settings.shard.selector or ""
    selector = f"{labels.MANAGED_SELECTOR},{buckets.replace(' in (', ' notin (', 1)}"
    return selector + (f",{labels.INSTANCE}={instance_label}" if instance_label else "")


async def strays(
    kube: Kube, settings: Settings, resources: list[Resource], instance_label: str | None = None
) -> list[Manifest]:
    """This shard's objects outside its selection (of one instance label, if given): ours by
    our field manager too, not only by labels anyone can set, and not disowned."""
    selector = outside(settings, instance_label)
    lists = await asyncio.gather(
        *(
            kube.list(res, ns, label_selector=selector)
            for res in resources
            for ns in settings.namespaces or (None,)
        )
    )
    return [obj for found in lists for obj in found.items if _ours(settings, obj)]


def _ours(settings: Settings, obj: Manifest) -> bool:
    """This shard's, as garbage collection judges it: our label and field manager (a record
    or labels made by hand are no claim), and no owner record that disagrees with the labels."""
    return managed_by_us(obj) and not disowned(obj) and settings.shard.owns_object(obj)


async def relabel(kube: Kube, strays_: list[Manifest]) -> int:
    """Give each stray its bucket label back; how many were. One that changed meanwhile (409)
    or is gone (404) is left to the next sweep."""
    done = await asyncio.gather(*(_relabel_one(kube, obj) for obj in strays_))
    if moved := sum(done):
        log.info("%d object(s) of ours outside this shard's buckets relabelled into them", moved)
    return sum(done)


async def _relabel_one(kube: Kube, obj: Manifest) -> bool:
    meta, key = obj["metadata"], instance_key(obj)
    if key is None:
        return False
    res = await kube.resource(obj["apiVersion"], obj["kind"])
    body = {
        "metadata": {
            "resourceVersion": meta["resourceVersion"],
            "labels": {labels.SHARD_BUCKET: bucket_of(*key)},
        }
    }
    try:
        await kube.request(
            "PATCH",
            res,
            meta.get("namespace"),
            res.url(meta["name"]),
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
            params={"fieldManager": RELABEL_MANAGER},
        )
    except NotLeading:
        raise  # not ours to write yet (a standby's start): the caller must not assume it done
    except ApiError as err:
        if err.status not in (404, 409):
            log.warning(
                "relabelling %s %s/%s: %s", obj["kind"], meta.get("namespace"), meta["name"], err
            )
        return False
    return True


async def sweep(kube: Kube, settings: Settings, resources: list[Resource]) -> int:
    """Find and relabel every stray of this shard (a no-op when it does not select)."""
    if settings.shard.selector is None:
        return 0
    return await relabel(kube, await strays(kube, settings, resources))
