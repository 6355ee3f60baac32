"""The local cluster's calls by path, through the package's one door (`jupyternetes_ssa.kube`).

Requests, server-side apply and a self-healing list+watch loop for the node agent: list, watch
from the list's resourceVersion, re-watch when a stream ends, re-list on 410 Gone or any error
(with backoff). Errors are the door's: `ApiError` (with `.status`) and `WatchExpired`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from jupyternetes_ssa.kube import ApiError, Kube, Resource, WatchExpired

log = logging.getLogger(__name__)
Object = dict[str, Any]
EventHandler = Callable[[str, Object], Awaitable[None]]
ListHandler = Callable[[list[Object]], Awaitable[None]]


def now() -> str:
    """An RFC 3339 timestamp in the form the apiserver writes."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A MicroTime (Lease renewTime) timestamp."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DOORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> {id(api): Kube}


def door(api: Kube | Any) -> Kube:
    """The package's client for ``api`` (a `Kube`, or a kr8s async ``Api`` to wrap): one per
    Api and event loop, not one per call (each would open an HTTP session of its own and
    leave it open)."""
    if isinstance(api, Kube):
        return api
    doors = _DOORS.setdefault(asyncio.get_running_loop(), {})
    found = doors.get(id(api))
    if found is None or found.api is not api:
        found = doors[id(api)] = Kube(api)
    return found


def status_code(error: BaseException) -> int | None:
    """The HTTP status of a failed request (None: not an answer of the apiserver)."""
    return (error.status or None) if isinstance(error, ApiError) else None


async def request(
    api: Kube | Any,
    method: str,
    path: str,
    *,
    body: Object | None = None,
    params: dict[str, str] | None = None,
    content_type: str = "application/json",
    ignore: tuple[int, ...] = (),
) -> Object | None:
    """Send one request to ``path`` (e.g. /api/v1/nodes/x); None if its status is in ``ignore``."""
    return await door(api).call(
        method, path, body=body, params=params, content_type=content_type, ignore=ignore
    )


async def apply(api: Kube | Any, path: str, body: Object, manager: str) -> Object | None:
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
    api: Kube | Any,
    res: Resource,
    on_list: ListHandler,
    on_event: EventHandler,
    field_selector: str | None = None,
    timeout_seconds: int = 240,
) -> None:
    """Run forever: hand each full listing of ``res`` to ``on_list`` and every change to
    ``on_event`` (bookmarks only move the resourceVersion on)."""
    kube = door(api)
    backoff = 0.2
    while True:
        try:
            listed = await kube.list(res, None, field_selector=field_selector)
            await on_list(listed.items)
            version = listed.resource_version
            backoff = 0.2
            while True:
                stream = kube.watch(
                    res,
                    None,
                    version,
                    field_selector=field_selector,
                    timeout_seconds=timeout_seconds,
                )
                async for kind, obj in stream:
                    version = obj.get("metadata", {}).get("resourceVersion") or version
                    if kind != "BOOKMARK":
                        await on_event(kind, obj)
        except asyncio.CancelledError:
            raise
        except WatchExpired:
            log.info("watch of %s expired (410); listing again", res.plural)
        except Exception:
            log.warning(
                "list/watch of %s failed; retrying in %.1fs", res.plural, backoff, exc_info=True
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
