"""The network rule of process pods: which sockets a pod's processes hold, and which break it.

A pod may listen on its own IP and on localhost, nowhere else, and talk to loopback peers only.
The guard reads /proc (sockets, process table, file descriptors): it detects, it cannot prevent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple


class Socket(NamedTuple):
    proto: str
    local: ipaddress.IPv4Address | ipaddress.IPv6Address
    local_port: int
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address
    remote_port: int
    state: str
    inode: int


TCP_LISTEN = "0A"


def _address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """An address of /proc/net/{tcp,udp}[6]: host-order 32-bit words in hex, then the port."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw), int(port, 16)


def parse_sockets(proto: str, table: str) -> list[Socket]:
    """The rows of one /proc/net table."""
    sockets = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, local_port = _address(fields[1])
        remote, remote_port = _address(fields[2])
        sockets.append(
            Socket(proto, local, local_port, remote, remote_port, fields[3], int(fields[9]))
        )
    return sockets


def read_sockets() -> list[Socket]:
    sockets: list[Socket] = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError):
            sockets += parse_sockets(proto, Path(f"/proc/net/{proto}").read_text())
    return sockets


def _plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    """An IPv4-mapped IPv6 address as IPv4; any other address as it is."""
    return getattr(ip, "ipv4_mapped", None) or ip


def is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return _plain(ip).is_loopback


LOCALHOST = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def violations(sockets: Iterable[Socket], inodes: set[int], pod_ip: str) -> list[str]:
    """What breaks the network rule among the sockets whose inode is in ``inodes``.

    A pod may listen on its own IP and on localhost (kernels, say), nowhere else: not on a
    wildcard address, another pod's IP or a real interface. It may talk to loopback peers only.
    """
    own = {ipaddress.ip_address(pod_ip), *LOCALHOST}
    found = []
    for s in sockets:
        if s.inode not in inodes:
            continue
        listening = s.state == TCP_LISTEN if s.proto.startswith("tcp") else s.remote_port == 0
        if listening and s.local_port and _plain(s.local) not in own:
            found.append(
                f"listens on {s.local}:{s.local_port} ({s.proto}), but a pod may listen on its"
                f" IP {pod_ip} or on localhost only"
            )
        elif s.remote_port and not is_loopback(s.remote):
            found.append(
                f"talks to {s.remote}:{s.remote_port} ({s.proto}), but only loopback is allowed"
            )
    return found


def process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, process group, session) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def pod_pids(roots: set[int], table: Mapping[int, tuple[int, int, int]]) -> set[int]:
    """The processes of the sessions/groups led by ``roots``, and all their descendants."""
    pids = {p for p, (_, group, session) in table.items() if session in roots or group in roots}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in pids:
                pids.add(child)
                todo.append(child)
    return pids


def socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def listening(pids: set[int]) -> list[str]:
    """Where the processes listen (TCP), for messages."""
    inodes = socket_inodes(pids)
    return sorted(
        f"{s.local}:{s.local_port}"
        for s in read_sockets()
        if s.inode in inodes and s.proto.startswith("tcp") and s.state == TCP_LISTEN
    )
