"""The ordered start of a local cluster: etcd, apiserver, then the rest in parallel."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jupyternetes_ssa.kube import Kube

from . import procs
from .cluster import MARKER, SERVICE_CIDR, LocalCluster, child_env, free_ports, say
from .crds import FIELD_MANAGER as MANAGER
from .crds import all_established, apply_crds
from .kube import apply, request
from .paths import kube_version
from .pki import Pki, make_pki
from .provisioner import PROVISIONER
from .waiting import GiveUp, wait_for, wait_until


def start(
    state_dir: Path, bin_dir: Path, node_name: str, timeout: float, owner_pid: int | None = None
) -> LocalCluster:
    """Start every component in a fresh ``state_dir``; stop them all again if anything fails."""
    began = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER).touch()
    etcd_port, peer_port, api_port, kcm_port, sched_port = free_ports(5)
    url = f"https://127.0.0.1:{api_port}"
    pki = make_pki(state_dir, url, node_name)
    cluster = LocalCluster(state_dir, pki.admin_kubeconfig, bin_dir, url, node_name)
    cluster.started_at = time.time()
    if owner_pid is not None:
        cluster.reaper = _spawn_reaper(state_dir, owner_pid)
    cluster.save()
    deadline = time.monotonic() + timeout
    try:
        _launch(cluster, "etcd", _etcd_argv(cluster, etcd_port, peer_port))
        _until(cluster, deadline, "etcd /health", lambda: _etcd_healthy(etcd_port))
        _launch(cluster, "kube-apiserver", _apiserver_argv(cluster, pki, etcd_port, api_port))
        _blocking(_start_on_apiserver(cluster, pki, (kcm_port, sched_port), deadline))
    except BaseException:
        _report_failure(cluster)
        procs.stop(cluster.processes)
        raise
    say(f"up in {time.monotonic() - began:.1f}s at {url}")
    say(f'kubeconfig: {cluster.kubeconfig}  (eval "$(jupyternetes-ssa local-cluster env)")')
    return cluster


async def _start_on_apiserver(
    cluster: LocalCluster, pki: Pki, ports: tuple[int, int], deadline: float
) -> None:
    """Once the apiserver runs: the other components, our CRDs and StorageClass, readiness."""
    kube = await _wait_for(cluster, deadline, "kube-apiserver", lambda: _connect(pki))
    try:
        await _wait_for(
            cluster, deadline, "kube-apiserver ready (RBAC bootstrapped)", lambda: _ready(kube)
        )
        _launch(cluster, "kube-controller-manager", _kcm_argv(cluster, pki, ports[0]))
        _launch(cluster, "kube-scheduler", _scheduler_argv(cluster, pki, ports[1]))
        _launch(cluster, "node", _node_argv(cluster, pki))
        await _configure(cluster, kube, deadline)
        for port in ports:
            url = f"https://127.0.0.1:{port}/healthz"
            await _wait_for(cluster, deadline, url, lambda u=url: _component_healthy(u))
    finally:
        await kube.close()


def _blocking(job: Coroutine[Any, Any, None]) -> None:
    """Run ``job`` to its end from synchronous code, even when the caller has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(job)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, job).result()


def _launch(cluster: LocalCluster, name: str, argv: list[str]) -> None:
    """Start one component and record it at once, so a later failure can still stop it."""
    cluster.processes.append(procs.spawn(name, argv, cluster.state_dir, child_env()))
    cluster.save()


def _spawn_reaper(state_dir: Path, owner_pid: int) -> procs.Proc:
    argv = [
        sys.executable,
        "-m",
        "jupyternetes_ssa.local_cluster.reaper",
        f"--pid={owner_pid}",
        f"--start-time={procs.start_time(owner_pid)}",
        f"--state-dir={state_dir}",
    ]
    return procs.spawn("reaper", argv, state_dir, child_env())


def _bin(cluster: LocalCluster, name: str) -> str:
    return str(cluster.bin_dir / name)


def _etcd_argv(cluster: LocalCluster, port: int, peer: int) -> list[str]:
    client, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    return [
        _bin(cluster, "etcd"),
        "--name=local",
        f"--data-dir={cluster.state_dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=local={peer_url}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync=true",  # a throw-away cluster: durability costs seconds, buys nothing
        "--log-level=warn",
    ]


def _apiserver_argv(cluster: LocalCluster, pki: Pki, etcd_port: int, port: int) -> list[str]:
    return [
        _bin(cluster, "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cluster.state_dir / 'pki'}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
        f"--proxy-client-key-file={pki.front_proxy_client.key}",
        f"--service-account-key-file={pki.sa_key}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        # Endpoints may not hold loopback IPs, and the advertise address is 127.0.0.1: do not
        # publish endpoints for the `kubernetes` Service (nothing in here dials it anyway).
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        f"--audit-policy-file={_audit_policy(cluster)}",
        f"--audit-log-path={cluster.audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",  # an event is in the file before its answer is sent
    ]


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # The control plane's own chatter (leases, node heartbeats, controllers' lists) would be
        # most of the log; what tests look at is what ServiceAccounts and the admin ask.
        {
            "level": "None",
            "users": [
                "system:apiserver",
                "system:kube-controller-manager",
                "system:kube-scheduler",
            ],
        },
        {"level": "None", "userGroups": ["system:nodes"]},
        {"level": "Metadata"},
    ],
}


def _audit_policy(cluster: LocalCluster) -> Path:
    """Every request at Metadata level (who, verb, resource, answer): see LocalCluster.audit_log."""
    path = cluster.state_dir / "audit-policy.json"
    path.write_text(json.dumps(AUDIT_POLICY, indent=2))
    return path


def _component_argv(cluster: LocalCluster, name: str, kubeconfig: Path, port: int) -> list[str]:
    """Flags kube-controller-manager and kube-scheduler share."""
    return [
        _bin(cluster, name),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def _kcm_argv(cluster: LocalCluster, pki: Pki, port: int) -> list[str]:
    return [
        *_component_argv(
            cluster, "kube-controller-manager", pki.controller_manager_kubeconfig, port
        ),
        "--controllers=*",  # defaults: garbagecollector, namespace, serviceaccount(-token), ...
        # One identity for all controllers: per-controller ServiceAccounts (kubeadm's way) cost
        # ~4 s of every start, one token round-trip per controller, and change nothing we test.
        "--use-service-account-credentials=false",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca.cert}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        # Its client's default, 20 requests a second, paced a burst of starts: one provisioned
        # claim costs the volume binder about four writes, so 100 servers started within a few
        # seconds waited up to 20 s for their volumes (BENCHMARKS.md, "new servers").
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def _scheduler_argv(cluster: LocalCluster, pki: Pki, port: int) -> list[str]:
    return _component_argv(cluster, "kube-scheduler", pki.scheduler_kubeconfig, port)


def _node_argv(cluster: LocalCluster, pki: Pki) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jupyternetes_ssa.local_cluster.node",
        f"--kubeconfig={pki.node_kubeconfig}",
        f"--admin-kubeconfig={pki.admin_kubeconfig}",
        f"--name={cluster.node_name}",
        f"--volumes-dir={cluster.state_dir / 'volumes'}",
        f"--kubelet-version={kube_version()}",
    ]


def _until(cluster: LocalCluster, deadline: float, what: str, check: Callable[[], Any]) -> Any:
    """Wait for ``check`` until the shared deadline, giving up early when a process died."""
    return wait_until(_unless_dead(cluster, what, check), _left(deadline), message=what)


async def _wait_for(
    cluster: LocalCluster, deadline: float, what: str, check: Callable[[], Any]
) -> Any:
    """The same, in a loop (``check`` may be async)."""
    return await wait_for(_unless_dead(cluster, what, check), _left(deadline), message=what)


def _unless_dead(cluster: LocalCluster, what: str, check: Callable[[], Any]) -> Callable[[], Any]:
    def probe() -> Any:
        for proc in cluster.processes:
            if not procs.alive(proc):
                raise GiveUp(f"{proc.name} exited while waiting for {what}; see {proc.log}")
        return check()

    return probe


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _etcd_healthy(port: int) -> bool:
    """etcd's own /health (not the apiserver: plain HTTP on loopback)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2.0) as answer:
        return json.load(answer).get("health") == "true"


def _component_healthy(url: str) -> bool:
    """Controller manager and scheduler report healthy on their own (self-signed) ports."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=2.0, context=context) as answer:
        return answer.status == 200


async def _connect(pki: Pki) -> Kube:
    """The admin's client, through the package's door, once the apiserver answers."""
    return await Kube.connect(kubeconfig=str(pki.admin_kubeconfig))


async def _ready(kube: Kube) -> bool:
    """It serves, and its bootstrap RBAC (which the scheduler and the node need) is in place."""
    path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:kube-scheduler"
    return await request(kube, "GET", path, ignore=(404,)) is not None


async def _configure(cluster: LocalCluster, kube: Kube, deadline: float) -> None:
    """Install CRDs and the default StorageClass, then wait for what tests rely on."""
    names = await apply_crds(kube)
    await apply(kube, "/apis/storage.k8s.io/v1/storageclasses/local", _storage_class(), MANAGER)
    await _wait_for(cluster, deadline, "our CRDs Established", lambda: all_established(kube, names))
    account = "/api/v1/namespaces/default/serviceaccounts/default"
    await _wait_for(
        cluster,
        deadline,
        "the default ServiceAccount",
        lambda: request(kube, "GET", account, ignore=(404,)),
    )
    node = f"/api/v1/nodes/{cluster.node_name}"
    await _wait_for(
        cluster, deadline, f"node {cluster.node_name} Ready", lambda: _node_ready(kube, node)
    )


async def _node_ready(kube: Kube, path: str) -> bool:
    node = await request(kube, "GET", path, ignore=(404,)) or {}
    conditions = node.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _storage_class() -> dict[str, Any]:
    """The default StorageClass, served by the node agent's hostPath provisioner."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "local",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }


def _report_failure(cluster: LocalCluster) -> None:
    """Show why: the log tail of each component that died (or of all, if none did)."""
    dead = [p for p in cluster.processes if not procs.alive(p)] or cluster.processes
    for proc in dead:
        say(f"--- {proc.name} ({proc.log}) ---\n{procs.log_tail(proc)}")
