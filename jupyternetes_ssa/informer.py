"""List-then-watch one kind into a dict, forever, the way client-go's reflector does.

kr8s' own watch ends silently when the server closes the stream and never re-lists; here a
closed stream resumes from the last resourceVersion (kept fresh by bookmarks), a 410 Gone re-lists,
and any error re-lists after a backoff. A re-list reconciles the cache with the list, so deletions
missed while disconnected still reach the handler. `keep` filters before anything is stored (a
shard holds only its own objects, shard.py); an object that stops being kept is a deletion.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from jupyternetes_ssa.kube import ApiError, Kube, Resource, WatchExpired
from jupyternetes_ssa.observe import Key, cached, collector_paused, key_of
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)
Handler = Callable[[str, Manifest, Manifest | None], None]  # (ADDED|MODIFIED|DELETED, new, old)


class Informer:
    def __init__(
        self,
        kube: Kube,
        res: Resource,
        scopes: tuple[str, ...],
        store: dict[Key, Manifest],
        handler: Handler,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        keep: Callable[[Manifest], bool] | None = None,
    ):
        self.kube, self.res, self.store, self.handler = kube, res, store, handler
        self.keep = keep or (lambda obj: True)
        self.scopes: tuple[str | None, ...] = scopes or (None,)
        self.selectors = {"label_selector": label_selector, "field_selector": field_selector}
        self.timeout_seconds = timeout_seconds
        self._synced: set[str | None] = set()
        self._seen: dict[str | None, str] = {}  # per scope: the resourceVersion delivered up to
        self._failing: set[str | None] = set()
        self.relists = 0
        self.last_error: Exception | None = None
        self._failing_since: float | None = None

    @property
    def synced(self) -> bool:
        return self.listed and not self._failing

    @property
    def listed(self) -> bool:
        """Every scope was listed once: the cache is complete, if perhaps stale while failing."""
        return len(self._synced) == len(self.scopes)

    def delivered_past(self, namespace: str, resource_version: str) -> bool:
        """Whether every change of this kind up to `resource_version` has reached the cache.
        etcd's revisions are one sequence for every kind, so an object written at revision R
        names an instance created before R: if the watch is past R and the instance is not in
        the cache, its deletion was delivered. False when either version is not a number (an
        apiserver is free to use opaque ones: then the caller asks)."""
        scope = None if self.scopes == (None,) else namespace
        seen = self._seen.get(scope, "")
        return seen.isdigit() and resource_version.isdigit() and int(seen) >= int(resource_version)

    def failing_for(self) -> float:
        """Seconds since list/watch started failing without a successful list since (0: fine)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    async def run(self) -> None:
        await asyncio.gather(*(self._run_scope(s) for s in self.scopes))

    async def _run_scope(self, scope: str | None) -> None:
        failures = 0
        while True:
            try:
                rv = await self._relist(scope)
                self._failing.discard(scope)
                if not self._failing:
                    self._failing_since = None
                failures = 0
                while True:
                    rv = await self._watch(scope, rv)
            except WatchExpired:
                log.info("%s watch expired; re-listing", self.res.kind)
            except (ApiError, OSError, ValueError) as err:
                self._failing.add(scope)
                self._failing_since = self._failing_since or time.monotonic()
                self.last_error = err
                failures += 1
                delay = min(30.0, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
                log.warning(
                    "%s list/watch failed (%s); re-listing in %.1fs", self.res.kind, err, delay
                )
                await asyncio.sleep(delay)

    def _in_scope(self, key: Key, scope: str | None) -> bool:
        return scope is None or key[0] == scope

    async def _relist(self, scope: str | None) -> str:
        def kept(obj: Manifest) -> Manifest | None:
            return cached(obj) if self.keep(obj) else None

        with collector_paused():
            listed = await self.kube.list(self.res, scope, **self.selectors, each=kept)
        self.relists += 1
        fresh = {key_of(o): o for o in listed.items}
        for key in [k for k in self.store if self._in_scope(k, scope) and k not in fresh]:
            self.handler("DELETED", self.store.pop(key), None)
        for key, obj in fresh.items():
            old = self.store.get(key)
            self.store[key] = obj
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get(
                "resourceVersion"
            ):
                self.handler("MODIFIED" if old else "ADDED", obj, old)
        self._synced.add(scope)
        self._seen[scope] = listed.resource_version
        return listed.resource_version

    async def _watch(self, scope: str | None, rv: str) -> str:
        async for kind, obj in self.kube.watch(
            self.res, scope, rv, **self.selectors, timeout_seconds=self.timeout_seconds
        ):
            rv = obj.get("metadata", {}).get("resourceVersion", rv)
            self._seen[scope] = rv
            if kind == "BOOKMARK":
                continue
            obj.setdefault("apiVersion", self.res.api_version)
            obj.setdefault("kind", self.res.kind)
            key = key_of(obj)
            held = self.store.get(key)
            if held and (kind == "DELETED" or held["metadata"].get("resourceVersion") == rv):
                obj = held  # gone (nothing reads its body), or our own write: cached already
            else:
                obj = cached(obj)
            if kind != "DELETED" and not self.keep(obj):
                if key not in self.store:
                    continue
                kind = "DELETED"
            old = self.store.pop(key, None) if kind == "DELETED" else self.store.get(key)
            if kind != "DELETED":
                self.store[key] = obj
            self.handler(kind, obj, old)
        return rv
