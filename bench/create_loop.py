"""Baseline (b): one request per object, straight from Python, the way kubespawner works.

kubespawner creates a server's PVC and then its pod with one create call each, many servers at
once, and stops a server by deleting its pod. This does the same for every instance's rendered
objects, ``--concurrency`` instances at a time, over one client: the floor for "one request per
object". It uses nothing of jupyternetes-ssa but its one door to the apiserver (``Kube.create``
and ``Kube.delete``, with the same retries of 429/5xx as every client of ours), so the contenders
differ in what they send, not how.

    python -m bench.create_loop --kubeconfig K --objects groups.json --concurrency 8 [--delete]

Prints ``{"statuses": {HTTP status: count}, "started": t, "elapsed_s": s}``: ``started`` is
``time.monotonic()`` (the system's monotonic clock, comparable across processes) at the first
request, ``elapsed_s`` the time from there to the last answer, without the interpreter's start
(for comparison with a process that runs already).

With ``--apply MANAGER`` it server-side applies instead of creating: the bench plays the hub this
way (its spawner applies instances), in a process of its own so that the hub's requests are not
slowed by the bench's own watches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from jupyternetes_ssa.kube import ApiError, Kube


async def _send(kube: Kube, obj: dict, delete: bool, manager: str | None) -> int:
    """One POST (DELETE, apply) of ``obj``; its HTTP status."""
    try:
        if manager:
            await kube.apply(obj, field_manager=manager)
            return 200
        if not delete:
            await kube.create(obj, field_manager=None)  # as kubespawner sends it: no manager
            return 201
        res = await kube.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return 200 if await kube.delete(res, meta["namespace"], meta["name"]) else 404
    except ApiError as err:
        return err.status


async def run_all(
    kube: Kube,
    groups: list[list[dict]],
    concurrency: int,
    delete: bool = False,
    manager: str | None = None,
) -> dict[int, int]:
    """Each group's objects in order (PVC before pod), ``concurrency`` groups at a time; count
    answers by HTTP status."""
    gate = asyncio.Semaphore(concurrency)
    statuses: dict[int, int] = {}

    async def one(group: list[dict]) -> None:
        async with gate:
            for obj in group:
                status = await _send(kube, obj, delete, manager)
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(one(g) for g in groups))
    return statuses


async def main_async(args: argparse.Namespace) -> int:
    kube = await Kube.connect(kubeconfig=str(args.kubeconfig))
    groups = json.loads(args.objects.read_text())
    for group in groups[:1]:  # discovery before the clock starts, as a running process has it
        for obj in group:
            await kube.resource(obj["apiVersion"], obj["kind"])
    started = time.monotonic()
    statuses = await run_all(kube, groups, args.concurrency, args.delete, args.apply)
    elapsed = time.monotonic() - started
    print(json.dumps({"statuses": statuses, "started": started, "elapsed_s": elapsed}))
    return 0 if set(statuses) <= {200, 201} else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--objects", type=Path, required=True, help="JSON list of object lists")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--delete", action="store_true", help="delete the objects instead")
    parser.add_argument("--apply", metavar="MANAGER", help="server-side apply them instead")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
