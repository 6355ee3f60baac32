"""Baseline (b): one POST per object, straight from Python, the way kubespawner creates servers.

kubespawner creates a server's PVC and then its pod with one create call each, many servers at
once. This does the same for every instance's rendered objects, ``--concurrency`` instances at a
time, over one client: the floor for "one request per object". It uses nothing of
jupyternetes-ssa but its one door to the apiserver (``Kube.create``: a POST, with the same retries
of 429/5xx as every client of ours), so the contenders differ in what they send, not how.

    python -m bench.create_loop --kubeconfig K --objects groups.json --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from jupyternetes_ssa.kube import ApiError, Kube


async def create_all(kube: Kube, groups: list[list[dict]], concurrency: int) -> dict[int, int]:
    """POST each group's objects in order (PVC before pod); count answers by HTTP status."""
    gate = asyncio.Semaphore(concurrency)
    statuses: dict[int, int] = {}

    async def one(group: list[dict]) -> None:
        async with gate:
            for obj in group:
                try:
                    await kube.create(obj)
                    status = 201
                except ApiError as err:
                    status = err.status
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(one(g) for g in groups))
    return statuses


async def main_async(args: argparse.Namespace) -> int:
    kube = await Kube.connect(kubeconfig=str(args.kubeconfig))
    groups = json.loads(args.objects.read_text())
    statuses = await create_all(kube, groups, args.concurrency)
    print(json.dumps({"statuses": statuses}))
    return 0 if set(statuses) <= {201} else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--objects", type=Path, required=True, help="JSON list of object lists")
    parser.add_argument("--concurrency", type=int, default=8)
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
