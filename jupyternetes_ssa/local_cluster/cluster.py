"""Bring a real Kubernetes control plane up as plain local processes, and take it down again.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and our Python node agent run as
detached processes bound to 127.0.0.1 on free ports. Everything about one cluster (keys, logs,
pid files, etcd data, state.json) lives in its state directory, so ``down`` can find and remove
all of it from another process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs
from .build import ensure_binaries
from .paths import PACKAGE_DIR, default_state_dir, kube_version

DEFAULT_NODE = "local-node-1"
STATE_FILE = "state.json"
MARKER = ".jupyternetes-local-cluster"
SERVICE_CIDR = "127.2.0.0/16"  # loopback on purpose: a ClusterIP dialled by mistake stays local


@dataclass
class LocalCluster:
    """A running (or last known) local cluster, as recorded in its state directory."""

    state_dir: Path
    kubeconfig: Path
    bin_dir: Path
    apiserver_url: str
    node_name: str = DEFAULT_NODE
    processes: list[procs.Proc] = field(default_factory=list)
    started_at: float = 0.0
    reaper: procs.Proc | None = None  # takes the cluster down when its owner process exits

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log: one JSON event per request (user, verb, resource, code)."""
        return self.state_dir / "audit.log"

    def running(self) -> bool:
        """True when every component process is alive."""
        return bool(self.processes) and all(procs.alive(p) for p in self.processes)

    def env(self) -> dict[str, str]:
        """KUBECONFIG and a PATH with our kubectl first."""
        path = os.environ.get("PATH", "")
        return {"KUBECONFIG": str(self.kubeconfig), "PATH": f"{self.bin_dir}:{path}"}

    def save(self) -> None:
        data = {
            "kubeconfig": str(self.kubeconfig),
            "bin_dir": str(self.bin_dir),
            "apiserver_url": self.apiserver_url,
            "node_name": self.node_name,
            "started_at": self.started_at,
            "processes": [p.to_json() for p in self.processes],
            "reaper": self.reaper.to_json() if self.reaper else None,
        }
        tmp = self.state_dir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_dir / STATE_FILE)

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster | None:
        """The cluster recorded in ``state_dir``, or None if there is none."""
        try:
            data = json.loads((state_dir / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(
            state_dir=state_dir,
            kubeconfig=Path(data["kubeconfig"]),
            bin_dir=Path(data["bin_dir"]),
            apiserver_url=data["apiserver_url"],
            node_name=data.get("node_name", DEFAULT_NODE),
            started_at=data.get("started_at", 0.0),
            processes=[procs.Proc.from_json(p) for p in data.get("processes", [])],
            reaper=procs.Proc.from_json(data["reaper"]) if data.get("reaper") else None,
        )


def say(message: str) -> None:
    """Progress goes to stderr so stdout stays clean for ``eval "$(... env)"``."""
    print(f"local-cluster: {message}", file=sys.stderr, flush=True)


def _resolve(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()).expanduser().resolve()


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise up/down on one state dir; the lock file sits beside it so rmtree keeps it."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(state_dir.parent / f".{state_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(
    state_dir: Path | None = None,
    *,
    bin_dir: Path | None = None,
    node_name: str = DEFAULT_NODE,
    timeout: float = 120.0,
    owner_pid: int | None = None,
) -> LocalCluster:
    """Start a local cluster in ``state_dir`` (building binaries first if needed) and return it.

    A no-op that returns the running cluster when one already runs there; leftovers of a crashed
    cluster are cleaned up first. With ``owner_pid`` (e.g. a test session's ``os.getpid()``) the
    cluster is taken down as soon as that process exits, even when it is killed.
    """
    state_dir = _resolve(state_dir)
    with _locked(state_dir):
        current = LocalCluster.load(state_dir)
        if current and current.running():
            say(f"already running at {current.apiserver_url} (kubeconfig {current.kubeconfig})")
            return current
        _teardown(state_dir, current)
        binaries = ensure_binaries(bin_dir)
        from .startup import start

        return start(state_dir, binaries, node_name, timeout, owner_pid)


def down(state_dir: Path | None = None, timeout: float = 10.0) -> bool:
    """Stop every process of the cluster in ``state_dir`` and remove its state.

    Returns False when there was nothing to stop.
    """
    state_dir = _resolve(state_dir)
    with _locked(state_dir):
        current = LocalCluster.load(state_dir)
        existed = current is not None or (state_dir / MARKER).exists()
        _teardown(state_dir, current, timeout)
        return existed


def status(state_dir: Path | None = None) -> LocalCluster | None:
    """The cluster recorded in ``state_dir`` (check ``.running()``), or None."""
    return LocalCluster.load(_resolve(state_dir))


def _teardown(state_dir: Path, cluster: LocalCluster | None, timeout: float = 10.0) -> None:
    """Stop recorded processes, then delete the state dir if (and only if) we created it."""
    if cluster is not None:
        procs.stop(cluster.processes, timeout)
        if cluster.reaper is not None and cluster.reaper.pid != os.getpid():
            procs.stop([cluster.reaper], timeout)
    if (state_dir / MARKER).exists():
        shutil.rmtree(state_dir, ignore_errors=True)
    elif state_dir.exists() and any(state_dir.iterdir()):
        raise RuntimeError(f"{state_dir} is not empty and not a local-cluster state dir; refusing")


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def child_env() -> dict[str, str]:
    """Environment for the components: our package importable, never a proxy."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def describe(cluster: LocalCluster) -> dict[str, Any]:
    """A JSON-friendly summary for ``status``."""
    return {
        "apiserver": cluster.apiserver_url,
        "kubeconfig": str(cluster.kubeconfig),
        "bin_dir": str(cluster.bin_dir),
        "kubernetes": kube_version(),
        "running": cluster.running(),
        "processes": [
            {"name": p.name, "pid": p.pid, "alive": procs.alive(p), "log": p.log}
            for p in cluster.processes
        ],
        "reaper_alive": cluster.reaper is not None and procs.alive(cluster.reaper),
    }
