"""The ordered start of a local cluster: etcd, apiserver, then the rest in parallel."""

from __future__ import annotations

import json
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from . import procs
from .cluster import (
    MARKER,
    SERVICE_CIDR,
    LocalCluster,
    Pki,
    child_env,
    free_ports,
    make_pki,
    say,
)
from .crds import APPLY_HEADERS, apply_params, apply_requests, is_established, load_crds
from .paths import kube_version
from .provisioner import PROVISIONER
from .waiting import GiveUp, wait_until


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
        _wait_etcd(cluster, etcd_port, deadline)
        _launch(cluster, "kube-apiserver", _apiserver_argv(cluster, pki, etcd_port, api_port))
        with _admin_client(pki, url) as client:
            _wait_ready(cluster, client, deadline)
            _launch(cluster, "kube-controller-manager", _kcm_argv(cluster, pki, kcm_port))
            _launch(cluster, "kube-scheduler", _scheduler_argv(cluster, pki, sched_port))
            _launch(cluster, "node", _node_argv(cluster, pki))
            _configure(cluster, client, deadline)
            _wait_components(cluster, client, (kcm_port, sched_port), deadline)
    except BaseException:
        _report_failure(cluster)
        procs.stop(cluster.processes)
        raise
    say(f"up in {time.monotonic() - began:.1f}s at {url}")
    say(f'kubeconfig: {cluster.kubeconfig}  (eval "$(jupyternetes-ssa local-cluster env)")')
    return cluster


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
    ]


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


def _admin_client(pki: Pki, url: str) -> httpx.Client:
    """An HTTPS client that verifies the apiserver against our CA and presents the admin cert."""
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    directory = pki.ca.cert.parent
    context.load_cert_chain(directory / "admin.crt", directory / "admin.key")
    return httpx.Client(base_url=url, verify=context, trust_env=False, timeout=10.0)


def _until(cluster: LocalCluster, deadline: float, what: str, check: Callable[[], Any]) -> Any:
    """Wait for ``check`` until the shared deadline, giving up early when a process died."""

    def probe() -> Any:
        for proc in cluster.processes:
            if not procs.alive(proc):
                raise GiveUp(f"{proc.name} exited while waiting for {what}; see {proc.log}")
        return check()

    return wait_until(probe, timeout=max(deadline - time.monotonic(), 0.1), message=what)


def _wait_etcd(cluster: LocalCluster, port: int, deadline: float) -> None:
    with httpx.Client(trust_env=False, timeout=2.0) as client:

        def healthy() -> bool:
            return client.get(f"http://127.0.0.1:{port}/health").json().get("health") == "true"

        _until(cluster, deadline, "etcd /health", healthy)


def _wait_ready(cluster: LocalCluster, client: httpx.Client, deadline: float) -> None:
    _until(cluster, deadline, "kube-apiserver /readyz", lambda: client.get("/readyz").is_success)


def _configure(cluster: LocalCluster, client: httpx.Client, deadline: float) -> None:
    """Install CRDs and the default StorageClass, then wait for what tests rely on."""
    crds = load_crds()
    for url, body in apply_requests(crds):
        _apply(client, url, body)
    _apply(client, "/apis/storage.k8s.io/v1/storageclasses/local", json.dumps(_storage_class()))
    for url, _ in apply_requests(crds):
        established = _established_check(client, url)
        _until(cluster, deadline, f"{url} Established", established)
    _until(
        cluster,
        deadline,
        "the default ServiceAccount",
        lambda: client.get("/api/v1/namespaces/default/serviceaccounts/default").is_success,
    )
    node = f"/api/v1/nodes/{cluster.node_name}"
    _until(cluster, deadline, f"node {cluster.node_name} Ready", lambda: _node_ready(client, node))


def _wait_components(
    cluster: LocalCluster, client: httpx.Client, ports: tuple[int, ...], deadline: float
) -> None:
    """Controller manager and scheduler report healthy on their own (self-signed) ports."""
    with httpx.Client(trust_env=False, verify=False, timeout=2.0) as local:
        for port in ports:
            url = f"https://127.0.0.1:{port}/healthz"
            _until(cluster, deadline, url, lambda u=url: local.get(u).is_success)


def _apply(client: httpx.Client, url: str, body: str) -> None:
    client.patch(url, content=body, headers=APPLY_HEADERS, params=apply_params()).raise_for_status()


def _get(client: httpx.Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    response.raise_for_status()
    return response.json()


def _established_check(client: httpx.Client, url: str) -> Callable[[], bool]:
    return lambda: is_established(_get(client, url))


def _node_ready(client: httpx.Client, url: str) -> bool:
    conditions = _get(client, url).get("status", {}).get("conditions") or []
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
