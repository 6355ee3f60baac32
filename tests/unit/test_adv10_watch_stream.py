"""adv10: Kube.watch's aiohttp path against streams the real apiserver cannot be made to send on
demand (FAULT INJECTION: a local HTTP server stands in for it): a stream ended mid-event, a line
that is not a watch event (a proxy's page, a truncated object), 410 as a status and as an ERROR
event. Each must be an ApiError (WatchExpired for 410), which Informer handles by re-listing;
anything else ends the informer's task (the reconciler exits 1, the hub's shared watch dies)."""

from __future__ import annotations

import asyncio
import contextlib
import types

import pytest
from aiohttp import web

from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import ApiError, Kube, Resource, WatchExpired, _Http

CONFIGMAP = Resource("v1", "ConfigMap", "configmaps")
ADDED = (
    b'{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"ns","resourceVersion":"5"}}}\n'
)


class _Api:
    """What _Http and Kube.watch read of a kr8s Api: the server, no token, no TLS."""

    def __init__(self, server: str):
        async def ssl_context():
            return False

        self.auth = types.SimpleNamespace(
            server=server, token=None, tls_server_name=None, ssl_context=ssl_context
        )
        self.__version__ = "test"

    def _construct_url(self, version, base, namespace, url):
        return f"/api/{version}/namespaces/{namespace}/{url}"


@contextlib.asynccontextmanager
async def _serving(body: bytes, status: int = 200, piece: int = 0):
    async def handler(request):
        if status != 200:
            return web.json_response(
                {"kind": "Status", "code": status, "reason": "Expired", "message": "too old"},
                status=status,
            )
        resp = web.StreamResponse()
        await resp.prepare(request)  # chunked: ended cleanly, whatever the body
        for i in range(0, len(body), piece or len(body) or 1):
            await resp.write(body[i : i + (piece or len(body))])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    kube = Kube.__new__(Kube)
    kube.api = _Api(f"http://127.0.0.1:{port}")
    kube.http = _Http(kube.api)
    try:
        yield kube
    finally:
        await kube.http.close()
        await runner.cleanup()


async def _released(kube: Kube) -> bool:
    """The stream a raising watch left behind is finalized and its connection let go (else a
    session retired by a re-authentication would stay open for good)."""
    for _ in range(200):  # bounded: the generator's finalizer runs within a few loop turns
        if not kube.http._users:
            return True
        await asyncio.sleep(0.01)
    return False


async def _drain(kube: Kube) -> list[str]:
    return [kind async for kind, _ in kube.watch(CONFIGMAP, "ns", "1", timeout_seconds=5)]


async def test_a_whole_stream_is_delivered():
    async with _serving(ADDED + ADDED) as kube:
        assert await _drain(kube) == ["ADDED", "ADDED"]


@pytest.mark.parametrize("piece", [1, 7, 64, 1000])
async def test_lines_split_across_reads_arrive_whole(piece):
    """Events cut anywhere by the network, several in one read or one over many."""
    big = ADDED.replace(b'"a"', b'"' + b"b" * 5000 + b'"')
    async with _serving(ADDED + big + ADDED + ADDED, piece=piece) as kube:
        got = [obj async for _, obj in kube.watch(CONFIGMAP, "ns", "1", timeout_seconds=5)]
    assert [len(o["metadata"]["name"]) for o in got] == [1, 5000, 1, 1]


@pytest.mark.parametrize(
    "body",
    [
        ADDED + ADDED[:40],  # cut mid-event, then a clean end of the chunked stream
        ADDED + b"<html>502 Bad Gateway</html>\n",  # a proxy's page
        ADDED + b'{"kind":"Status","code":500}\n',  # JSON, but no event type
        ADDED + b"[1, 2]\n",
    ],
    ids=["cut-mid-event", "html", "no-type", "not-an-object"],
)
async def test_a_stream_that_is_not_watch_events_is_an_api_error(body):
    async with _serving(body) as kube:
        kinds: list[str] = []
        with pytest.raises(ApiError):
            async for kind, _ in kube.watch(CONFIGMAP, "ns", "1", timeout_seconds=5):
                kinds.append(kind)
        assert kinds == ["ADDED"]
        assert await _released(kube)


async def test_410_as_a_status_and_as_an_error_event_is_watch_expired():
    async with _serving(b"", status=410) as kube:
        with pytest.raises(WatchExpired):
            await _drain(kube)
    error = b'{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}\n'
    async with _serving(ADDED + error) as kube:
        with pytest.raises(WatchExpired):
            await _drain(kube)
        assert await _released(kube)


async def test_an_informer_survives_a_garbled_stream():
    """The informer's task goes on (re-lists) rather than dying on the garbled line."""
    async with _serving(b'{"kind":"Status"}\n') as kube:

        class _Listed:
            items: list = []
            resource_version = "1"

        async def listed(*args, **kwargs):
            return _Listed()

        kube.list = listed
        informer = Informer(kube, CONFIGMAP, ("ns",), {}, lambda *_: None, timeout_seconds=5)
        task = asyncio.create_task(informer.run())
        try:
            for _ in range(200):  # bounded: the first failed watch is logged within a moment
                if informer.last_error is not None or task.done():
                    break
                await asyncio.sleep(0.01)
            assert not task.done(), task
            assert isinstance(informer.last_error, ApiError)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
