"""The one module that talks to the apiserver.

Thin on purpose: raw dicts in and out over kr8s' `call_api`, so that lists carry their
resourceVersion, watches can resume from it, server-side apply and delete preconditions are
available (kr8s has neither), and every transient failure (429, 5xx, a dropped connection) is
retried with backoff in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import kr8s
import kr8s.asyncio
import orjson

from jupyternetes_ssa import FIELD_MANAGER, GROUP, VERSION
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)
# kr8s 0.20 warns for every apiserver newer than the releases it was tested with; the core, apps,
# coordination and CRD APIs we use are GA and unchanged, so the warning is noise.
warnings.filterwarnings(
    "ignore", message="Kubernetes version .* is not supported", category=UserWarning
)

RETRYABLE = frozenset({0, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def kind_key(self) -> str:
        """`Kind.group` (`Kind` for the core group): one name per kind, whatever its version."""
        return kind_key(self.api_version, self.kind)

    def url(self, name: str = "", sub: str = "") -> str:
        return "/".join(p for p in (self.plural, name, sub) if p)


POD = Resource("v1", "Pod", "pods")
PVC = Resource("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
EVENT = Resource("v1", "Event", "events")
NAMESPACE = Resource("v1", "Namespace", "namespaces", namespaced=False)
SECRET = Resource("v1", "Secret", "secrets")
LEASE = Resource("coordination.k8s.io/v1", "Lease", "leases")
INSTANCE = Resource(f"{GROUP}/{VERSION}", "JupyterNotebookInstance", "jupyternotebookinstances")
TEMPLATE = Resource(f"{GROUP}/{VERSION}", "JupyterNotebookTemplate", "jupyternotebooktemplates")
ACCESS_REVIEW = Resource(
    "authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False
)
BY_KIND = {r.kind: r for r in (POD, PVC, EVENT, LEASE, INSTANCE, TEMPLATE, SECRET, NAMESPACE)}


def kind_key(api_version: str, kind: str) -> str:
    group = api_version.rpartition("/")[0]
    return f"{kind}.{group}" if group else kind


class ApiError(Exception):
    """An apiserver answer other than success; status 0 means no answer at all."""

    def __init__(self, status: int, reason: str, message: str, body: dict | None = None):
        self.status, self.reason, self.message, self.body = status, reason, message, body or {}
        super().__init__(f"{status} {reason}: {message}" if status else message)

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE

    @property
    def causes(self) -> list[dict]:
        return (self.body.get("details") or {}).get("causes") or []


class NotLeading(ApiError):
    """A write refused before it was sent: this replica may no longer be the leader."""

    def __init__(self) -> None:
        super().__init__(0, "NotLeading", "not the leader (lease not renewed in time); not writing")

    @property
    def retryable(self) -> bool:
        return False


class UnknownKind(ApiError):
    """The apiserver serves no such kind (or not at that apiVersion)."""

    def __init__(self, message: str):
        super().__init__(404, "NotFound", message)


class CannotConnect(ApiError):
    """No client at all: the kubeconfig is missing or unusable, or the server did not answer."""

    def __init__(self, message: str):
        super().__init__(0, "CannotConnect", message)


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): the caller must re-list."""


@dataclass(frozen=True)
class ObjectList:
    items: list[Manifest]
    resource_version: str


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.0)


def _encode(body: Any) -> bytes:
    """JSON for the apiserver. orjson: a tenth of the stdlib's time, on a path taken per request."""
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def _response_error(resp: httpx.Response) -> ApiError:
    """An error answer as ApiError. We read error statuses ourselves: kr8s, left to raise, takes
    any 401 or 403 (an RBAC or Pod Security refusal too) for expired credentials and replaces its
    HTTP session, which cuts every watch and request in flight on this client."""
    try:
        content = resp.content
    except httpx.ResponseNotRead:
        content = b""
    return _error(resp.status_code, resp.reason_phrase, content)


def _error(status: int, phrase: str, content: bytes) -> ApiError:
    try:
        body = orjson.loads(content)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return ApiError(status, body.get("reason", ""), body.get("message", phrase), body)


def _watch_event(line: bytes | str) -> tuple[str, Manifest]:
    """(type, object) of one line of a watch; a line that is not a watch event (a truncated
    one, a proxy's page) is an ApiError like any broken stream, for the caller to re-list."""
    try:
        event = orjson.loads(line)
        kind, obj = event["type"], event.get("object") or {}
        if isinstance(kind, str) and isinstance(obj, dict):
            return kind, obj
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    text = line if isinstance(line, str) else line.decode(errors="replace")
    raise ApiError(0, "BadWatchEvent", f"not a watch event: {text[:200]!r}")


class _Http:
    """Requests and watches on kr8s' credentials, sent with aiohttp: its C parser costs a third
    of the CPU httpx does per request (0.5 against 1.9 ms, BENCHMARKS.md "Profile"), and a
    reconciler sends thousands and decodes a watch event for each. kr8s still finds, loads and
    refreshes the credentials (kubeconfig, in-cluster account, exec plugins)."""

    def __init__(self, api: kr8s.asyncio.Api):
        self.api = api
        self.session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()
        # requests and watches in flight per session; sessions replaced by renew(), each closed
        # once its last one ends
        self._users: dict[aiohttp.ClientSession, int] = {}
        self._retired: set[aiohttp.ClientSession] = set()

    async def _open(self) -> aiohttp.ClientSession:
        """One session, however many requests arrive before it exists (each would open its own
        across the await for the TLS context, and leak all but the last)."""
        async with self._opening:
            if self.session is None or self.session.closed:
                self.session = await self._new_session()
            return self.session

    async def _new_session(self) -> aiohttp.ClientSession:
        auth = self.api.auth
        if not auth.server:  # kr8s is re-reading credentials (a 401 elsewhere): try again
            raise ApiError(0, "Unreachable", "the credentials are being re-read")
        return aiohttp.ClientSession(
            auth.server,
            headers={"User-Agent": f"jupyternetes-ssa kr8s/{self.api.__version__}"},
            # no pool limit: each watch holds a connection for minutes, and a reconciler of many
            # namespaces runs hundreds; callers bound their own requests (--concurrency)
            connector=aiohttp.TCPConnector(ssl=await auth.ssl_context(), limit=0),
            timeout=aiohttp.ClientTimeout(sock_connect=30, sock_read=30),
        )

    def _prepared(self, params: dict | None, headers: dict) -> tuple[dict[str, str], dict]:
        """The query as strings, and the headers with the current token (read per request:
        whoever re-authenticates, every request after sees it)."""
        query = {k: str(v) for k, v in (params or {}).items()}
        if token := self.api.auth.token:
            headers = {**headers, "Authorization": f"Bearer {token}"}
        return query, headers

    async def send(
        self, method: str, path: str, params: dict | None, content: bytes | None, headers: dict
    ) -> tuple[int, str, bytes]:
        """(status, reason phrase, body); raises ApiError(0) when the server was not reached."""
        query, headers = self._prepared(params, headers)
        try:
            async with (
                self._using() as session,
                session.request(
                    method,
                    path,
                    params=query,
                    data=content,
                    headers=headers,
                    server_hostname=self.api.auth.tls_server_name or None,
                ) as resp,
            ):
                return resp.status, resp.reason or "", await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc

    async def lines(self, path: str, params: dict, read_timeout: float) -> AsyncIterator[bytes]:
        """A streamed GET (a watch), line by line, whatever a line's length; ApiError for an
        error answer or a broken stream."""
        query, headers = self._prepared(params, {})
        timeout = aiohttp.ClientTimeout(sock_connect=30, sock_read=read_timeout)
        try:
            async with (
                self._using() as session,
                session.get(
                    path,
                    params=query,
                    headers=headers,
                    timeout=timeout,
                    server_hostname=self.api.auth.tls_server_name or None,
                ) as resp,
            ):
                if resp.status >= 400:
                    raise _error(resp.status, resp.reason or "", await resp.read())
                buf = bytearray()
                async for chunk in resp.content.iter_any():
                    start, scan = 0, len(buf)  # what buf held has no newline: search the chunk
                    buf += chunk
                    while (end := buf.find(b"\n", scan)) >= 0:
                        yield bytes(buf[start:end])
                        start = scan = end + 1
                    del buf[:start]
                if buf:  # a clean end in mid-line: the stream was cut (a proxy, a restart)
                    raise ApiError(0, "Unreachable", "the watch stream ended in mid-event")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The current session, counted in use until the request or watch ends."""
        session = self.session if self.session and not self.session.closed else await self._open()
        self._users[session] = self._users.get(session, 0) + 1
        try:
            yield session
        finally:
            if left := self._users[session] - 1:
                self._users[session] = left
            else:
                del self._users[session]
                if session in self._retired:
                    self._retired.discard(session)
                    await session.close()

    async def renew(self) -> None:
        """New credentials (a 401): requests from now on go on a new session. What is in flight
        on the old one goes on (the apiserver authenticated it when it began; a watch streams
        for minutes) and the old session is closed once it is idle. Closing it at once did not
        even end its watches: they hung, silent, past their read timeout (still hung after 400 s
        with a 330 s one, adv10)."""
        old, self.session = self.session, None
        if old is None or old.closed:
            return
        if self._users.get(old):
            self._retired.add(old)
        else:
            await old.close()

    async def close(self) -> None:
        """Close every session (the client is done with)."""
        sessions = [self.session, *self._retired] if self.session else [*self._retired]
        self.session, self._retired = None, set()
        for session in sessions:
            await session.close()


def _fast_path(api: Any) -> _Http | None:
    """The aiohttp path for a real kr8s Api without a proxy (else, and for fault injection in the
    tests, every request goes through kr8s' own call_api)."""
    if isinstance(api, kr8s.asyncio.Api) and not getattr(api.auth, "proxy", None):
        return _Http(api)
    return None


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, kr8s.ServerError) and exc.response is not None:
        return _response_error(exc.response)
    return ApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}")


class Kube:
    """Typed verbs over one kr8s Api; every verb retries transient failures."""

    def __init__(self, api: kr8s.asyncio.Api, retry: RetryPolicy | None = None):
        self.api = api
        self.http = _fast_path(api)
        self.retry = retry or RetryPolicy()
        self._discovered: dict[str, list[Resource]] = {}  # groupVersion -> its resources
        self.write_gate: Callable[[], bool] | None = None  # leader election's fence
        self._minor: list[str] = []  # the server's "major.minor", once asked (shared)

    def fenced(self, gate: Callable[[], bool]) -> Kube:
        """The same connection, refusing every write while `gate()` is False."""
        other = self.retrying(self.retry)
        other.write_gate = gate
        return other

    def retrying(self, retry: RetryPolicy) -> Kube:
        """The same connection (and credentials, refreshed for all) with another retry policy."""
        other = Kube(self.api, retry)
        other._discovered, other.write_gate, other.http, other._minor = (
            self._discovered,
            self.write_gate,
            self.http,
            self._minor,
        )
        return other

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """A client for the kubeconfig (else the in-cluster account); CannotConnect if none."""
        try:
            api = await kr8s.asyncio.api(kubeconfig=kubeconfig, context=context)
        except (OSError, ValueError, KeyError, httpx.HTTPError, kr8s.ServerError) as err:
            raise CannotConnect(f"{type(err).__name__}: {err}") from err
        api.timeout = httpx.Timeout(30.0)
        return cls(api)

    async def request(
        self, method: str, res: Resource, namespace: str | None, url: str, **kwargs: Any
    ) -> dict:
        """One REST call, decoded; raises ApiError after retrying what is transient."""
        reauthenticated = False
        for attempt in range(self.retry.attempts + 1):  # + the one after re-authenticating
            if method != "GET":
                if self.write_gate is not None and not self.write_gate():
                    raise NotLeading()
                log.debug("write: %s %s", method, url)
            try:
                status, phrase, content = await self._send(method, res, namespace, url, kwargs)
                if status < 400:
                    return orjson.loads(content) if content else {}
                err = _error(status, phrase, content)
            except (kr8s.ServerError, httpx.TransportError, kr8s.APITimeoutError) as exc:
                err = _as_api_error(exc)
            except ApiError as exc:  # the aiohttp path did not reach the server
                err = exc
            if err.status == 401 and not reauthenticated:
                reauthenticated = True  # an expired token: the only time to re-connect
                await self._reauthenticate()
                continue
            if not err.retryable or attempt >= self.retry.attempts - 1 + reauthenticated:
                raise err
            log.debug("retrying %s %s after %s", method, url, err)
            await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    async def _send(
        self, method: str, res: Resource, namespace: str | None, url: str, kwargs: dict
    ) -> tuple[int, str, bytes]:
        if self.http is None:
            async with self.api.call_api(
                method,
                version=res.api_version,
                namespace=namespace,
                url=url,
                raise_for_status=False,
                **kwargs,
            ) as resp:
                return resp.status_code, resp.reason_phrase, resp.content
        path = self.api._construct_url(res.api_version, kwargs.get("base", ""), namespace, url)
        headers = kwargs.get("headers") or {"Content-Type": "application/json"}
        content = _encode(kwargs["json"]) if "json" in kwargs else kwargs.get("content")
        return await self.http.send(method, path, kwargs.get("params"), content, headers)

    async def _reauthenticate(self) -> None:
        await self.api.auth.reauthenticate()
        await self.api._create_session()  # kr8s has no public way to re-read credentials
        if self.http is not None:
            await self.http.renew()  # a new session on the new credentials

    async def any(self, res: Resource, namespace: str | None, *, label_selector: str) -> bool:
        """Whether one object of the kind matches: one request of one item, whatever the count."""
        params = {"limit": 1, "labelSelector": label_selector}
        body = await self.request("GET", res, namespace, res.url(), params=params)
        return bool(body.get("items"))

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 250,
        each: Callable[[Manifest], Manifest | None] | None = None,
    ) -> ObjectList:
        """A complete list (all pages) or an exception: never a partial result.

        `each` maps every item as its page arrives (None drops it): a cache that keeps a part
        of each object never holds all of them whole at once (5,000 pods whole: 170 MiB).
        Pages of 250 (kubectl's are 500): a page decoded whole is what a start's memory peaks
        on, and what it leaves fragmented (the reconciler's peak at 5,000: 203 MiB with 500,
        194 MiB with 250, 188 MiB with 100, for 20 more list requests per kind and pass).
        """
        items: list[Manifest] = []
        params: dict[str, Any] = {"limit": page_size}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            body = await self.request("GET", res, namespace, res.url(), params=params)
            for item in body.pop("items", None) or []:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                if each is None or (item := each(item)) is not None:
                    items.append(item)
            meta = body.get("metadata", {})
            if not meta.get("continue"):
                return ObjectList(items, meta.get("resourceVersion", ""))
            params["continue"] = meta["continue"]

    async def get(self, res: Resource, namespace: str | None, name: str) -> Manifest | None:
        try:
            return await self.request("GET", res, namespace, res.url(name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def server_minor(self) -> str:
        """The apiserver's "major.minor" (e.g. "1.36"), asked once; "" while it cannot be
        read (asked again next time)."""
        if not self._minor:
            try:
                version = await self.request("GET", ROOT, None, "", base="/version")
            except ApiError as err:  # unknown: callers fall back to what needs no version
                log.warning("the apiserver's version is unknown: %s", err)
                return ""
            digits = re.sub(r"\D", "", str(version.get("minor", "")))
            self._minor.append(f"{version.get('major', '')}.{digits}")
        return self._minor[0]

    async def apply(
        self,
        manifest: Manifest,
        *,
        dry_run: bool = False,
        subresource: str = "",
        field_manager: str = FIELD_MANAGER,
        force: bool = True,
        validation: str = "Strict",
    ) -> Manifest:
        """Server-side apply `manifest`; returns the live object. Unknown fields are refused
        (`validation` "Strict") unless the caller checked them already ("Ignore")."""
        res = await self.resource(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        params = {"fieldManager": field_manager, "fieldValidation": validation}
        if force:
            params["force"] = "true"
        if dry_run:
            params["dryRun"] = "All"
        return await self.request(
            "PATCH",
            res,
            meta.get("namespace"),
            res.url(meta["name"], subresource),
            content=_encode(manifest),
            params=params,
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    async def create(
        self, manifest: Manifest, field_manager: str | None = FIELD_MANAGER
    ) -> Manifest:
        """POST, as our field manager like every write of ours (None: name none, and the
        apiserver names the writer after the User-Agent, "jupyternetes-ssa kr8s")."""
        res = await self.resource(manifest["apiVersion"], manifest["kind"])
        return await self.request(
            "POST",
            res,
            manifest["metadata"].get("namespace"),
            res.url(),
            content=_encode(manifest),
            params={"fieldManager": field_manager} if field_manager else None,
        )

    async def replace(
        self, manifest: Manifest, field_manager: str | None = FIELD_MANAGER
    ) -> Manifest:
        """PUT with the manifest's resourceVersion: optimistic concurrency (409 if it moved)."""
        res = await self.resource(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        return await self.request(
            "PUT",
            res,
            meta.get("namespace"),
            res.url(meta["name"]),
            content=_encode(manifest),
            params={"fieldManager": field_manager} if field_manager else None,
        )

    async def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        grace_seconds: int | None = None,
        dry_run: bool = False,
        propagation: str = "Background",
    ) -> bool:
        """Delete, guarded by preconditions; False when it was already gone.

        With `uid`/`resource_version` the apiserver refuses (409) if the object was replaced or
        changed since we looked, so a decision taken on a list never hits a newer object.
        """
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": propagation,
        }
        pre = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if pre:
            body["preconditions"] = pre
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if dry_run:
            body["dryRun"] = ["All"]
        try:
            await self.request("DELETE", res, namespace, res.url(name), content=_encode(body))
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def watch(
        self,
        res: Resource,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Manifest]]:
        """Yield (type, object) from resource_version on; ends when the server closes the stream.

        Raises WatchExpired on 410 so the caller re-lists. Bookmarks are requested and passed on
        (type BOOKMARK) so the caller's resourceVersion stays fresh.
        """
        params: dict[str, Any] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        lines = self._watch_kr8s if self.http is None else self._watch_http
        try:
            async for line in lines(res, namespace, params, timeout_seconds + 30):
                if not line:
                    continue
                kind, obj = _watch_event(line)
                if kind == "ERROR":
                    raise ApiError(
                        obj.get("code", 0), obj.get("reason", ""), obj.get("message", ""), obj
                    )
                yield kind, obj
        except ApiError as err:
            if err.status == 410:
                raise WatchExpired(err.message or "410 Gone") from err
            raise

    async def _watch_http(
        self, res: Resource, namespace: str | None, params: dict, read_timeout: float
    ) -> AsyncIterator[bytes]:
        path = self.api._construct_url(res.api_version, "", namespace, res.url())
        async for line in self.http.lines(path, params, read_timeout):
            yield line

    async def _watch_kr8s(
        self, res: Resource, namespace: str | None, params: dict, read_timeout: float
    ) -> AsyncIterator[str]:
        """Through kr8s' own client (an Api that is not kr8s', as fault injection uses)."""
        try:
            async with self.api.call_api(
                "GET",
                version=res.api_version,
                namespace=namespace,
                url=res.url(),
                params=params,
                stream=True,
                timeout=httpx.Timeout(30.0, read=read_timeout),
                raise_for_status=False,
            ) as resp:
                if resp.is_error:
                    await resp.aread()
                    raise _response_error(resp)
                async for line in resp.aiter_lines():
                    yield line
        except (kr8s.ServerError, httpx.TransportError, kr8s.APITimeoutError) as exc:
            raise _as_api_error(exc) from exc

    async def allowed(self, verb: str, res: Resource) -> bool:
        """Whether we may `verb` `res` in every namespace (or cluster-scoped). Asked
        (SelfSubjectAccessReview) rather than tried: kr8s answers a 403 by re-creating its HTTP
        session, which cuts every watch in flight."""
        attributes = {"verb": verb, "group": res.group, "resource": res.plural}
        review = {
            "apiVersion": ACCESS_REVIEW.api_version,
            "kind": ACCESS_REVIEW.kind,
            "spec": {"resourceAttributes": attributes},
        }
        answer = await self.request(
            "POST", ACCESS_REVIEW, None, ACCESS_REVIEW.url(), content=_encode(review)
        )
        return bool(answer.get("status", {}).get("allowed"))

    # --- discovery ---------------------------------------------------------------------------
    async def discover(self, group_version: str) -> list[Resource]:
        """The kinds one groupVersion serves (cached for the life of this client)."""
        if group_version not in self._discovered:
            where = Resource(group_version, "", "")
            body = await self.request("GET", where, None, "")
            self._discovered[group_version] = [
                Resource(group_version, r["kind"], r["name"], r.get("namespaced", True))
                for r in body.get("resources", [])
                if "/" not in r["name"]
            ]
        return self._discovered[group_version]

    async def resource(self, api_version: str, kind: str) -> Resource:
        """Where `kind` of `api_version` lives; UnknownKind if the apiserver does not serve it."""
        known = BY_KIND.get(kind)
        if known is not None and known.api_version == api_version:
            return known
        try:
            served = await self.discover(api_version)
        except ApiError as err:
            if err.status != 404:
                raise
            served = []
        for res in served:
            if res.kind == kind:
                return res
        raise UnknownKind(f"the apiserver serves no kind {kind} in apiVersion {api_version}")

    async def find_kind(self, spec: str) -> Resource:
        """`Kind` or `Kind.group` -> its preferred-version resource (core group first)."""
        kind, _, group = spec.partition(".")
        if not group:
            core = [r for r in await self.discover("v1") if r.kind == kind]
            if core:
                return core[0]
        groups = (await self.request("GET", Resource("", "", ""), None, "", base="/apis")).get(
            "groups", []
        )
        preferred = [
            g["preferredVersion"]["groupVersion"] for g in groups if not group or g["name"] == group
        ]
        found = [
            r
            for served in await asyncio.gather(*(self.discover(gv) for gv in preferred))
            for r in served
            if r.kind == kind
        ]
        if len(found) != 1:
            where = f"group {group}" if group else "any group"
            problem = "no" if not found else f"{len(found)} kinds"
            raise UnknownKind(
                f"{problem} {kind} served in {where}" + ("; name it as Kind.group" if found else "")
            )
        return found[0]

    # --- by URL path -------------------------------------------------------------------------
    # The local cluster (its start-up and node agent), the test fixtures and the benchmarks
    # address the API by path (`/api/v1/nodes/x`) rather than by kind: the same client, retries
    # and error types as every verb above.
    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
        ignore: tuple[int, ...] = (),
    ) -> dict | None:
        """One request to an absolute API path, JSON back; None if its status is in `ignore`."""
        base, _, name = path.rpartition("/")
        if not base:
            raise ValueError(f"{path}: give a path below the root, e.g. /api/v1/namespaces")
        try:
            return await self.request(
                method,
                ROOT,
                None,
                name,
                base=base,
                params=params,
                content=None if body is None else _encode(body),
                headers={"Content-Type": content_type},
            )
        except ApiError as err:
            if err.status in ignore:
                return None
            raise

    async def close(self) -> None:
        """Close this client's connections: for a loop that ends (the local cluster's start-up)."""
        session = getattr(self.api, "_session", None)  # kr8s 0.20 offers no close of its own
        if session is not None:
            await session.aclose()
        if self.http is not None:
            await self.http.close()


ROOT = Resource("", "", "")  # `call`'s paths carry their own apiVersion
