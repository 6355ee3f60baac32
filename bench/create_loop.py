"""Baseline (b): one POST per object, straight from Python, the way kubespawner creates servers.

kubespawner creates a server's PVC and then its pod with one create call each, many servers at
once. This does the same for every instance's rendered objects, ``--concurrency`` instances at a
time, over one HTTP client: the floor for "one request per object". It imports nothing of
jupyternetes-ssa on purpose.

    python -m bench.create_loop --kubeconfig K --objects groups.json --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

CORE = {"PersistentVolumeClaim": "persistentvolumeclaims", "Pod": "pods"}


def client_settings(kubeconfig: Path) -> tuple[str, ssl.SSLContext | bool, dict[str, str]]:
    """Server URL, TLS verification and auth header of a bearer-token kubeconfig."""
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c for c in config["contexts"] if c["name"] == context_name)["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    user = next(u for u in config["users"] if u["name"] == context["user"])["user"]
    verify: ssl.SSLContext | bool = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif "certificate-authority-data" in cluster:
        pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        verify = ssl.create_default_context(cadata=pem)
    elif "certificate-authority" in cluster:
        verify = ssl.create_default_context(cafile=cluster["certificate-authority"])
    return cluster["server"], verify, {"Authorization": f"Bearer {user['token']}"}


def url_for(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/{CORE[obj['kind']]}"


async def create_all(
    client: httpx.AsyncClient, groups: list[list[dict]], concurrency: int
) -> dict[int, int]:
    """POST each group's objects in order (PVC before pod); count answers by HTTP status."""
    gate = asyncio.Semaphore(concurrency)
    statuses: dict[int, int] = {}

    async def one(group: list[dict]) -> None:
        async with gate:
            for obj in group:
                resp = await client.post(url_for(obj), json=obj)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1

    await asyncio.gather(*(one(g) for g in groups))
    return statuses


async def main_async(args: argparse.Namespace) -> int:
    server, verify, headers = client_settings(args.kubeconfig)
    groups = json.loads(args.objects.read_text())
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(
        base_url=server, verify=verify, headers=headers, timeout=60, limits=limits
    ) as client:
        statuses = await create_all(client, groups, args.concurrency)
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
