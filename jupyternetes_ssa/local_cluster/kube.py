"""Small async helpers over a kr8s ``Api``: raw requests and a self-healing list+watch loop.

kr8s's own watch ends silently when the server closes the stream and retries a 410 with the
same stale resourceVersion, so the node agent uses this loop instead: list, watch from the list's
resourceVersion, re-watch when a stream ends, re-list on 410 Gone or any error (with backoff).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from kr8s import ServerError

log = logging.getLogger(__name__)
Object = dict[str, Any]
EventHandler = Callable[[str, Object], Awaitable[None]]
ListHandler = Callable[[list[Object]], Awaitable[None]]


class Gone(Exception):
    """The watch's resourceVersion is too old: the caller must list again."""


def now() -> str:
    """An RFC 3339 timestamp in the form the apiserver writes."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A MicroTime (Lease renewTime) timestamp."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_code(error: BaseException) -> int | None:
    """The HTTP status of a kr8s ServerError, if it carries one."""
    response = getattr(error, "response", None)
    return response.status_code if response is not None else None


async def request(
    api: Any,
    method: str,
    path: str,
    *,
    body: Object | None = None,
    params: dict[str, str] | None = None,
    content_type: str = "application/json",
    ignore: tuple[int, ...] = (),
) -> Object | None:
    """Send one request to ``path`` (e.g. /api/v1/nodes/x); None if its status is in ``ignore``."""
    base, name = path.rsplit("/", 1)
    try:
        async with api.call_api(
            method,
            base=base,
            version="",
            url=name,
            params=params,
            content=None if body is None else json.dumps(body),
            headers={"Content-Type": content_type},
        ) as response:
            return response.json() if response.content else {}
    except ServerError as error:
        if status_code(error) in ignore:
            return None
        raise


async def apply(api: Any, path: str, body: Object, manager: str) -> Object | None:
    """Server-side apply ``body`` at ``path`` as ``manager``, forcing conflicts."""
    return await request(
        api,
        "PATCH",
        path,
        body=body,
        params={"fieldManager": manager, "force": "true"},
        content_type="application/apply-patch+yaml",
    )


async def list_watch(
    api: Any,
    path: str,
    on_list: ListHandler,
    on_event: EventHandler,
    params: dict[str, str] | None = None,
    timeout_seconds: int = 240,
) -> None:
    """Run forever: hand each full listing to ``on_list`` and every change to ``on_event``."""
    backoff = 0.2
    while True:
        try:
            listed = await request(api, "GET", path, params=params)
            assert listed is not None
            await on_list(listed.get("items") or [])
            version: str = listed["metadata"]["resourceVersion"]
            backoff = 0.2
            while True:
                version = await _watch(api, path, params, version, on_event, timeout_seconds)
        except asyncio.CancelledError:
            raise
        except Gone:
            log.info("watch of %s expired (410); listing again", path)
        except Exception:
            log.warning("list/watch of %s failed; retrying in %.1fs", path, backoff, exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


async def _watch(
    api: Any,
    path: str,
    params: dict[str, str] | None,
    version: str,
    on_event: EventHandler,
    timeout_seconds: int,
) -> str:
    """Follow one watch stream to its end; return the last resourceVersion seen."""
    base, name = path.rsplit("/", 1)
    query = {
        **(params or {}),
        "watch": "true",
        "resourceVersion": version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(timeout_seconds),
    }
    async with api.call_api(
        "GET",
        base=base,
        version="",
        url=name,
        params=query,
        stream=True,
        timeout=httpx.Timeout(10.0, read=timeout_seconds + 30.0),
    ) as response:
        async for line in response.aiter_lines():
            if line:
                version = await _dispatch(json.loads(line), version, on_event)
    return version


async def _dispatch(event: Object, version: str, on_event: EventHandler) -> str:
    kind, obj = event["type"], event["object"]
    if kind == "ERROR":
        if obj.get("code") == 410:
            raise Gone(obj.get("message", ""))
        raise RuntimeError(f"watch error: {obj}")
    if kind != "BOOKMARK":
        await on_event(kind, obj)
    return obj.get("metadata", {}).get("resourceVersion") or version
