"""Readiness of a process pod's container: what must answer (its probe, else its TCP ports)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, NamedTuple

from .runtime import Object


class Check(NamedTuple):
    kind: str  # "tcp" | "http"
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()

    def describe(self, ip: str) -> str:
        if self.kind == "http":
            return f"{self.scheme.lower()}://{ip}:{self.port}{self.path}"
        return f"{ip}:{self.port}"


def _port(container: Object, value: Any) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"container {container['name']} declares no port named {value!r}")


def readiness_checks(container: Object) -> list[Check]:
    """What must answer before the container is ready: its probe, else its TCP ports."""
    probe = container.get("readinessProbe") or {}
    if "httpGet" in probe:
        get = probe["httpGet"]
        headers = tuple((h["name"], h["value"]) for h in get.get("httpHeaders") or [])
        path = get.get("path") or "/"
        scheme = get.get("scheme") or "HTTP"
        return [Check("http", _port(container, get["port"]), path, scheme, headers)]
    if "tcpSocket" in probe:
        return [Check("tcp", _port(container, probe["tcpSocket"]["port"]))]
    return [
        Check("tcp", int(p["containerPort"]))
        for p in container.get("ports") or []
        if p.get("protocol", "TCP") == "TCP"
    ]


async def answers(ip: str, check: Check) -> bool:
    """One probe of ``ip`` (always the loopback pod IP, never the probe's ``host``)."""
    context = None
    if check.kind == "http" and check.scheme.upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ip, check.port, ssl=context), timeout=1.0
        )
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        if check.kind == "tcp":
            return True
        headers = "".join(f"{k}: {v}\r\n" for k, v in check.headers)
        writer.write(
            f"GET {check.path} HTTP/1.1\r\nHost: {ip}:{check.port}\r\nUser-Agent: kube-probe\r\n"
            f"Accept: */*\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), timeout=1.0)
        parts = line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
