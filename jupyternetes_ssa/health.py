"""/healthz, /readyz and Prometheus /metrics for continuous mode, on a plain asyncio server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "jupyternetes_reconciles", "Instance reconciles by result.", ["result"], registry=r
        )
        self.errors = Counter(
            "jupyternetes_reconcile_errors",
            "Reconciles that ended in an error.",
            ["reason"],
            registry=r,
        )
        self.applies = Counter(
            "jupyternetes_applies", "Items by apply action.", ["action"], registry=r
        )
        self.pruned = Counter(
            "jupyternetes_pruned", "Objects garbage-collected.", ["kind"], registry=r
        )
        self.status_writes = Counter(
            "jupyternetes_status_writes", "Instance status writes.", registry=r
        )
        self.queue_depth = Gauge("jupyternetes_queue_depth", "Instances waiting.", registry=r)
        self.instances = Gauge("jupyternetes_instances", "Instances watched.", registry=r)
        self.leader = Gauge("jupyternetes_leader", "1 while this replica leads.", registry=r)
        self.duration = Histogram(
            "jupyternetes_reconcile_duration_seconds", "Time to reconcile one instance.", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve(
    host: str,
    port: int,
    ready: Callable[[], bool],
    metrics: Metrics,
    alive: Callable[[], bool] = lambda: True,
) -> asyncio.Server:
    """Start the server; `ready` and `alive` are asked on every probe."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else "/"
            code, body, ctype = _answer(path.split("?")[0], ready, alive, metrics)
            head = (
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


def _answer(path: str, ready, alive, metrics: Metrics) -> tuple[str, bytes, str]:
    text = "text/plain; charset=utf-8"
    if path == "/metrics":
        return "200 OK", metrics.exposition(), CONTENT_TYPE_LATEST
    if path == "/healthz":
        return ("200 OK", b"ok\n", text) if alive() else ("503 Service Unavailable", b"no\n", text)
    if path == "/readyz":
        return (
            ("200 OK", b"ok\n", text)
            if ready()
            else ("503 Service Unavailable", b"not ready\n", text)
        )
    return "404 Not Found", b"not found\n", text
