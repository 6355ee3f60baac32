"""A fake kubelet: registers a Node, heartbeats, and runs the pods bound to it via a PodRuntime.

The default runtime (``process_runtime.ProcessRuntime``) runs pods annotated
``local-cluster.jupyternetes.io/runtime: process`` as real processes on their pod IP, and
every other pod as the FakeRuntime does: Running at once, nothing started.

It authenticates as ``system:node:<name>`` (Node authorizer + NodeRestriction), so it may only see
and change its own Node, Lease and pods, exactly like a kubelet. Pod IPs come from 127.1.0.0/16:
this machine must never route pod traffic anywhere but loopback. (Consequence: Services get no
EndpointSlices, whose validation rejects loopback addresses; the controller manager logs that.)

    python -m jupyternetes_ssa.local_cluster.node --kubeconfig node.kubeconfig --name local-node-1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import platform
import signal
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyternetes_ssa.kube import POD, Kube

from .kube import Object, apply, list_watch, micro_now, now, request, status_code
from .runtime import FakeRuntime, PodRuntime

log = logging.getLogger("local-cluster.node")
HOST_IP = "127.0.0.1"
POD_NETWORK = ipaddress.ip_network("127.1.0.0/16")
MANAGER = "local-cluster-node"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10.0
STATUS_EVERY = 6  # heartbeats between node status refreshes, as the kubelet's 1-minute default


class IpPool:
    """Hands out loopback pod IPs, one per pod UID, and takes them back."""

    def __init__(self, network: ipaddress.IPv4Network = POD_NETWORK) -> None:
        if not network.subnet_of(ipaddress.ip_network("127.0.0.0/8")):  # type: ignore[arg-type]
            raise ValueError(f"{network} is not loopback: pod IPs must stay on this machine")
        self._network = network
        self._hosts = network.hosts()
        self._free: list[str] = []
        self._by_uid: dict[str, str] = {}

    def reserve(self, uid: str, ip: str) -> None:
        """Record an IP a pod already has (after the agent restarted)."""
        if ipaddress.ip_address(ip) in self._network:
            self._by_uid[uid] = ip

    def allocate(self, uid: str) -> str:
        """The pod's IP, allocating the next free one on first use."""
        if uid not in self._by_uid:
            self._by_uid[uid] = self._next()
        return self._by_uid[uid]

    def _next(self) -> str:
        used = set(self._by_uid.values())
        while self._free:
            ip = self._free.pop()
            if ip not in used:
                return ip
        for host in self._hosts:
            if str(host) not in used:
                return str(host)
        raise RuntimeError(f"pod network {self._network} exhausted")

    def release(self, uid: str) -> None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._free.append(ip)

    def known(self) -> set[str]:
        return set(self._by_uid)


@dataclass
class Capacity:
    """What the node advertises; generous so benchmarks are never limited by it."""

    cpu: str = "64"
    memory: str = "256Gi"
    pods: str = "10000"
    ephemeral_storage: str = "1Ti"

    def as_resources(self) -> dict[str, str]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods,
            "ephemeral-storage": self.ephemeral_storage,
        }


@dataclass
class NodeAgent:
    """Registers the Node, keeps it fresh and drives the lifecycle of its pods."""

    api: Any
    name: str
    runtime: PodRuntime = field(default_factory=FakeRuntime)
    kubelet_version: str = "v0.0.0"
    capacity: Capacity = field(default_factory=Capacity)
    ips: IpPool = field(default_factory=IpPool)
    _started: dict[str, Object | None] = field(default_factory=dict)  # uid -> status written
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _since: str = field(default_factory=now)

    def __post_init__(self) -> None:
        attach = getattr(self.runtime, "attach", None)
        if attach is not None:
            attach(self.publish)

    async def run(self) -> None:
        """Register, then heartbeat and sync pods until cancelled."""
        node = await self._retry(self.register, "register the node")
        await asyncio.gather(
            self.heartbeat(node["metadata"]["uid"]),
            list_watch(
                self.api,
                POD,
                self.on_list,
                self.on_event,
                field_selector=f"spec.nodeName={self.name}",
            ),
        )

    async def _retry(self, action: Callable[[], Awaitable[Object]], what: str) -> Object:
        delay = 0.2
        while True:
            try:
                return await action()
            except Exception:
                log.warning("could not %s; retrying in %.1fs", what, delay, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def register(self) -> Object:
        """Create (or take over) our Node object and report it Ready."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": _arch(),
                    "local-cluster.jupyternetes.io/fake-node": "true",
                },
            },
        }
        node = await apply(self.api, f"/api/v1/nodes/{self.name}", body, MANAGER)
        await self.report_status()
        log.info("registered node %s", self.name)
        assert node is not None
        return node

    async def report_status(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name},
            "status": self._node_status(),
        }
        await apply(self.api, f"/api/v1/nodes/{self.name}/status", body, MANAGER)

    def _node_status(self) -> Object:
        beat = now()

        def condition(kind: str, status: str, reason: str) -> Object:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": reason,
                "lastHeartbeatTime": beat,
                "lastTransitionTime": self._since,
            }

        resources = self.capacity.as_resources()
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.name},
            ],
            "nodeInfo": _node_info(self.kubelet_version),
        }

    async def heartbeat(self, node_uid: str) -> None:
        """Renew our Lease every 10 s and refresh the node status every minute.

        If someone deleted the Node, register it again (as a kubelet does on restart).
        """
        beats = 0
        while True:
            try:
                if not await self._node_exists():
                    node_uid = (await self.register())["metadata"]["uid"]
                await self._renew_lease(node_uid)
                if beats % STATUS_EVERY == STATUS_EVERY - 1:
                    await self.report_status()
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
            beats += 1
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _node_exists(self) -> bool:
        path = f"/api/v1/nodes/{self.name}"
        return await request(self.api, "GET", path, ignore=(404,)) is not None

    async def _renew_lease(self, node_uid: str) -> None:
        owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node_uid}
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": "kube-node-lease",
                "ownerReferences": [owner],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_now(),
            },
        }
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        await apply(self.api, path, body, MANAGER)

    async def on_list(self, pods: list[Object]) -> None:
        """A full listing: forget pods that vanished meanwhile, then sync every listed one."""
        present = {p["metadata"]["uid"] for p in pods}
        for uid in self.ips.known() | set(self._started):
            if uid not in present:  # deleted while we were not watching: stop what runs
                await self.on_event("DELETED", {"metadata": {"uid": uid}, "spec": {}})
        for pod in pods:
            ip = pod.get("status", {}).get("podIP")
            if ip:
                self.ips.reserve(pod["metadata"]["uid"], ip)
            await self.on_event("ADDED", pod)

    async def on_event(self, kind: str, pod: Object) -> None:
        """Queue the pod for a sync; syncs of one pod run in order, different pods in parallel."""
        task = asyncio.create_task(self._sync_serialised(kind, pod))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync_serialised(self, kind: str, pod: Object) -> None:
        uid = pod["metadata"]["uid"]
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            try:
                await self.sync(kind, pod)
            except Exception:
                log.warning("sync of pod %s failed", _ref(pod), exc_info=True)
                await self._resync_later(pod)
        if kind == "DELETED":
            self._locks.pop(uid, None)

    async def _resync_later(self, pod: Object) -> None:
        """Retry a failed sync from the pod's current state, unless it is gone."""
        await asyncio.sleep(1.0)
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        fresh = await request(self.api, "GET", path, ignore=(404,))
        if fresh and fresh["metadata"]["uid"] == meta["uid"]:
            await self.on_event("MODIFIED", fresh)

    async def sync(self, kind: str, pod: Object) -> None:
        """Move one pod along its lifecycle: start it, or finish its deletion."""
        uid = pod["metadata"]["uid"]
        if kind == "DELETED":
            await self._stop(pod)
            self._forget(uid)
        elif pod["metadata"].get("deletionTimestamp"):
            await self._stop(pod)
            await self._finalize(pod)
        elif pod.get("status", {}).get("phase", "Pending") == "Pending":
            status = self._started.get(uid)
            if status is None:
                await self._start(pod)
            else:  # started, but writing its status failed: write it again
                await self._patch_status(pod, status)
        else:
            self._started.setdefault(uid, None)

    async def _start(self, pod: Object) -> None:
        uid = pod["metadata"]["uid"]
        host_network = pod["spec"].get("hostNetwork", False)
        ip = HOST_IP if host_network else self.ips.allocate(uid)
        for container in pod["spec"].get("containers") or []:
            image = container.get("image", "")
            await self._record(pod, "Pulled", f'Container image "{image}" already present')
            await self._record(pod, "Created", f"Created container {container['name']}")
        status = await self.runtime.start(pod, ip, HOST_IP)
        self._started[uid] = status  # at once: a process that exits fast publishes against it
        await self._patch_status(pod, status)
        for container in pod["spec"].get("containers") or []:
            await self._record(pod, "Started", f"Started container {container['name']}")
        log.info("pod %s: %s at %s", _ref(pod), status.get("phase"), ip)

    async def _record(self, pod: Object, reason: str, message: str) -> None:
        """A kubelet's Normal event about the pod (best effort, as the kubelet's are)."""
        meta = pod["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "type": "Normal",
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/events"
        try:
            await request(self.api, "POST", path, body=event)
        except Exception as err:  # an event is never worth failing a pod's start for
            log.debug("event %s for pod %s not recorded: %s", reason, _ref(pod), err)

    async def publish(self, pod: Object, status: Object) -> None:
        """Write a status the runtime reports after ``start`` (a process got ready, or exited).

        Serialised with the pod's syncs, so it lands after the status ``start`` returned and
        never after the pod was stopped. Retried while the apiserver fails, until written or
        superseded by a newer status.
        """
        uid = pod["metadata"]["uid"]
        delay = 0.2
        while True:
            lock = self._locks.get(uid)
            if lock is None or uid not in self._started:
                return
            async with lock:
                if uid not in self._started:
                    return
                self._started[uid] = status
                try:
                    await self._patch_status(pod, status)
                    log.info("pod %s: %s%s", _ref(pod), status.get("phase"), _readiness(status))
                    return
                except Exception as error:
                    code = status_code(error)
                    if code is not None and code < 500 and code != 429:
                        log.warning("pod %s: status rejected (%s)", _ref(pod), code, exc_info=True)
                        return
                    log.warning("pod %s: writing status failed; retrying", _ref(pod))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            if self._started.get(uid) is not status:
                return

    async def close(self) -> None:
        """Stop everything the runtime still runs: the agent is going down."""
        close = getattr(self.runtime, "close", None)
        if close is not None:
            await close()

    async def _patch_status(self, pod: Object, status: Object) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        body = {"metadata": {"uid": meta["uid"]}, "status": status}
        await request(
            self.api,
            "PATCH",
            path,
            body=body,
            content_type="application/strategic-merge-patch+json",
            ignore=(404,),
        )

    async def _stop(self, pod: Object) -> None:
        if pod["metadata"]["uid"] in self._started:
            await self.runtime.stop(pod)
            self._started.pop(pod["metadata"]["uid"], None)

    async def _finalize(self, pod: Object) -> None:
        """What a kubelet does once containers are gone: delete with grace period 0."""
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        if await request(self.api, "DELETE", path, body=body, ignore=(404, 409)) is not None:
            log.info("pod %s: deleted", _ref(pod))
        self.ips.release(meta["uid"])

    def _forget(self, uid: str) -> None:
        self.ips.release(uid)
        self._started.pop(uid, None)


def _ref(pod: Object) -> str:
    meta = pod["metadata"]
    if "name" not in meta:
        return f"uid {meta.get('uid')}"
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _readiness(status: Object) -> str:
    ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
    return f" (Ready {ready})" if ready and status.get("phase") == "Running" else ""


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _node_info(kubelet_version: str) -> Object:
    return {
        "machineID": "local-cluster",
        "systemUUID": "local-cluster",
        "bootID": "local-cluster",
        "kernelVersion": platform.release(),
        "osImage": "jupyternetes-ssa local cluster (fake node)",
        "containerRuntimeVersion": "local-cluster://0.1.0",
        "kubeletVersion": kubelet_version,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": _arch(),
    }


def _load_runtime(spec: str | None, api: Any, pods_dir: Path | None) -> PodRuntime:
    """The ProcessRuntime by default, ``fake`` for the FakeRuntime, or a ``module:Class``."""
    if not spec or spec == "process":
        from .process_runtime import ProcessRuntime

        return ProcessRuntime(api, pods_dir)
    if spec == "fake":
        return FakeRuntime()
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)()


def _pods_dir(args: argparse.Namespace) -> Path | None:
    if args.pods_dir:
        return Path(args.pods_dir)
    return Path(args.volumes_dir) / "pods" if args.volumes_dir else None


async def _main(args: argparse.Namespace) -> None:
    api = await Kube.connect(kubeconfig=args.kubeconfig)
    admin = await Kube.connect(kubeconfig=args.admin_kubeconfig) if args.admin_kubeconfig else None
    runtime = _load_runtime(args.runtime, admin or api, _pods_dir(args))
    agent = NodeAgent(api, args.name, runtime, args.kubelet_version)
    jobs = [agent.run()]
    if admin is not None and args.volumes_dir:
        from .provisioner import HostPathProvisioner

        jobs.append(HostPathProvisioner(admin, Path(args.volumes_dir)).run())
    try:
        await asyncio.gather(*jobs)
    finally:
        await agent.close()  # no pod process outlives the agent


def main(argv: list[str] | None = None) -> None:
    """Entry point of the node process started by ``local-cluster up``; SIGTERM stops it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, help="credentials of system:node:<name>")
    parser.add_argument("--name", default="local-node-1")
    parser.add_argument(
        "--admin-kubeconfig",
        help="enables the hostPath volume provisioner; reads Secrets/ConfigMaps for process pods",
    )
    parser.add_argument("--volumes-dir", help="where provisioned volumes live")
    parser.add_argument(
        "--pods-dir", help="HOME and logs of process pods (default: <volumes-dir>/pods)"
    )
    parser.add_argument("--kubelet-version", default="v0.0.0")
    parser.add_argument(
        "--runtime",
        help="process (default: annotated pods run as processes, the rest fake), fake, "
        "or module:Class of a PodRuntime",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat otherwise
    warnings.filterwarnings("ignore", message="Kubernetes version .* is not supported")
    asyncio.run(_run_until_signalled(_main(args)))


async def _run_until_signalled(job: Awaitable[None]) -> None:
    task = asyncio.ensure_future(job)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    main()
