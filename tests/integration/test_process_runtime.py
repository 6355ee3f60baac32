"""The fake node's process runtime: an annotated pod really runs its command, on loopback only.

The cluster tests need the local backend (the runtime is a feature of our fake node); the tests
without the ``cluster`` fixture drive the runtime in-process or check its pure parts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.local_cluster.cluster import free_ports
from jupyternetes_ssa.local_cluster.kube import request
from jupyternetes_ssa.local_cluster.netguard import parse_sockets, violations
from jupyternetes_ssa.local_cluster.pod_env import expand, field_value
from jupyternetes_ssa.local_cluster.process_runtime import (
    NETWORK_RULE,
    PROCESS,
    RUNTIME_ANNOTATION,
    ProcessRuntime,
    pod_dir,
)
from jupyternetes_ssa.local_cluster.waiting import GiveUp

IMAGE = "registry.k8s.io/pause:3.10"  # ignored by the process runtime
SERVE = ["python3", "-m", "http.server", "$(PORT)", "--bind", "$(POD_IP)"]
POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


@pytest.fixture
def local(cluster: Any) -> Any:
    if cluster.local is None:
        pytest.skip("the process runtime is a feature of the local cluster's fake node")
    return cluster.local


def process_pod(
    name: str, command: list[str], env: list[dict[str, Any]] | None = None, port: int | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": IMAGE, "command": command}
    if env:
        container["env"] = env
    if port is not None:
        container["ports"] = [{"name": "http", "containerPort": port}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {RUNTIME_ANNOTATION: PROCESS}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
    }


def serving_env(port: int, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "PORT", "value": str(port)}, POD_IP_ENV, *extra]


async def get(api: Any, path: str) -> dict[str, Any] | None:
    return await request(api, "GET", path, ignore=(404,))


def condition(pod: dict[str, Any], kind: str) -> str | None:
    found = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions") or []}
    return found.get(kind)


async def ready(api: Any, path: str) -> dict[str, Any] | None:
    pod = await get(api, path)
    if pod and pod.get("status", {}).get("phase") in ("Failed", "Succeeded"):
        raise GiveUp(f"the pod ended: {pod['status']}")
    return pod if pod and condition(pod, "Ready") == "True" else None


async def phase(api: Any, path: str, wanted: str) -> dict[str, Any] | None:
    pod = await get(api, path)
    return pod if pod and pod.get("status", {}).get("phase") == wanted else None


def logs(local: Any, pod: dict[str, Any] | None) -> str:
    """The pod's container log, to explain a failure."""
    if not pod:
        return "(no pod)"
    path = pod_dir(local.state_dir / "volumes" / "pods", pod) / "main.log"
    return path.read_text(errors="replace") if path.exists() else f"(no log at {path})"


async def start_ready(cluster: Any, local: Any, pods: str, body: dict[str, Any]) -> dict[str, Any]:
    created = await request(cluster.api, "POST", pods, body=body)
    path = f"{pods}/{body['metadata']['name']}"
    try:
        return await wait_for(lambda: ready(cluster.api, path), timeout=90, message="Ready")
    except Exception as error:
        pod = await get(cluster.api, path) or created
        raise AssertionError(f"{error}\n--- log ---\n{logs(local, pod)}") from error


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
        return await client.get(url)


async def accepts(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=2.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


# --- against the cluster --------------------------------------------------------------------------


async def test_a_process_pod_serves_http_on_its_loopback_ip(cluster, namespace, local):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    (port,) = free_ports(1)
    pod = await start_ready(
        cluster, local, pods, process_pod("web", SERVE, serving_env(port), port)
    )
    status = pod["status"]
    ip = status["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("127.0.0.0/8")
    assert ip != status["hostIP"]
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["ready"] is True
    assert "running" in status["containerStatuses"][0]["state"]

    response = await fetch(f"http://{ip}:{port}/")
    assert response.status_code == 200, response.text
    await wait_for(
        lambda: '"GET / HTTP/1.1" 200' in logs(local, pod), timeout=10, message="the request log"
    )
    assert not await accepts("127.0.0.1", port), "it must listen on the pod IP only"


async def test_env_comes_from_secrets_field_refs_and_expansion(cluster, namespace, local):
    base = f"/api/v1/namespaces/{namespace}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hub-token"},
        "stringData": {"token": "s3cret value"},
    }
    await request(cluster.api, "POST", f"{base}/secrets", body=secret)
    (port,) = free_ports(1)
    env = serving_env(
        port,
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub-token", "key": "token"}}},
        {"name": "URL", "value": "http://$(POD_IP):$(PORT)/user/x/"},
        {"name": "ESCAPED", "value": "$$(POD_IP) $(NOT_DEFINED)"},
        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "MAYBE",
            "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}},
        },
    )
    script = (
        'printf "%s\\n" "$TOKEN" "$URL" "$ESCAPED" "$ME" "${MAYBE-unset}" "$HOME" > env.txt'
        ' && exec python3 -m http.server "$1" --bind "$2"'
    )
    command = ["sh", "-c", script, "sh", "$(PORT)", "$(POD_IP)"]
    pod = await start_ready(cluster, local, f"{base}/pods", process_pod("env", command, env, port))
    ip = pod["status"]["podIP"]

    response = await fetch(f"http://{ip}:{port}/env.txt")
    assert response.status_code == 200
    home = pod_dir(local.state_dir / "volumes" / "pods", pod) / "home"
    assert response.text.splitlines() == [
        "s3cret value",
        f"http://{ip}:{port}/user/x/",
        "$(POD_IP) $(NOT_DEFINED)",
        "env",
        "unset",
        str(home),
    ]


async def test_a_missing_secret_keeps_the_pod_pending_until_it_appears(cluster, namespace, local):
    base = f"/api/v1/namespaces/{namespace}"
    (port,) = free_ports(1)
    env = serving_env(
        port, {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}
    )
    await request(cluster.api, "POST", f"{base}/pods", body=process_pod("late", SERVE, env, port))

    async def config_error() -> dict[str, Any] | None:
        pod = await phase(cluster.api, f"{base}/pods/late", "Pending")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = await wait_for(config_error, timeout=60, message="CreateContainerConfigError")
    assert 'secret "late" not found' in waiting["message"]

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "late"},
        "stringData": {"token": "t"},
    }
    await request(cluster.api, "POST", f"{base}/secrets", body=secret)
    await wait_for(lambda: ready(cluster.api, f"{base}/pods/late"), timeout=90, message="Ready")


async def test_a_process_that_exits_3_fails_the_pod(cluster, namespace, local):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    command = ["sh", "-c", "echo starting; echo something broke >&2; exit 3"]
    await request(cluster.api, "POST", pods, body=process_pod("doomed", command))
    pod = await wait_for(
        lambda: phase(cluster.api, f"{pods}/doomed", "Failed"), timeout=60, message="Failed"
    )
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert "something broke" in terminated["message"]
    assert condition(pod, "Ready") == "False"
    assert "exited with code 3" in pod["status"]["message"]


async def test_a_process_that_exits_0_completes_the_pod(cluster, namespace, local):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    await request(cluster.api, "POST", pods, body=process_pod("done", ["true"]))
    pod = await wait_for(
        lambda: phase(cluster.api, f"{pods}/done", "Succeeded"), timeout=60, message="Succeeded"
    )
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")


async def test_an_unknown_command_fails_the_pod(cluster, namespace, local):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    body = process_pod("nocmd", ["no-such-command-anywhere"])
    await request(cluster.api, "POST", pods, body=body)
    pod = await wait_for(
        lambda: phase(cluster.api, f"{pods}/nocmd", "Failed"), timeout=60, message="Failed"
    )
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "StartError"
    assert "executable file not found" in terminated["message"]


async def test_deleting_the_pod_kills_the_process(cluster, namespace, local):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    (port,) = free_ports(1)
    pod = await start_ready(
        cluster, local, pods, process_pod("victim", SERVE, serving_env(port), port)
    )
    ip = pod["status"]["podIP"]
    assert await accepts(ip, port)

    await request(cluster.api, "DELETE", f"{pods}/victim")  # graceful
    await wait_for(
        lambda: not_accepting(ip, port), timeout=30, message="the port to stop accepting"
    )
    await wait_for(
        lambda: gone(cluster.api, f"{pods}/victim"), timeout=60, message="the pod to disappear"
    )


async def not_accepting(ip: str, port: int) -> bool:
    return not await accepts(ip, port)


async def gone(api: Any, path: str) -> bool:
    return await get(api, path) is None


async def test_listening_beyond_the_pod_ip_and_localhost_kills_the_pod(cluster, namespace, local):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    (port,) = free_ports(1)
    # 127.0.0.2 is loopback (nothing leaves the machine) but neither the pod's IP nor localhost
    command = ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.2"]
    await request(cluster.api, "POST", pods, body=process_pod("stray", command, port=port))
    pod = await wait_for(
        lambda: phase(cluster.api, f"{pods}/stray", "Failed"), timeout=60, message="Failed"
    )
    assert pod["status"]["reason"] == NETWORK_RULE
    assert f"listens on 127.0.0.2:{port}" in pod["status"]["message"]
    assert not await accepts("127.0.0.2", port)


async def test_pods_without_the_annotation_start_nothing(cluster, namespace, local):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    body = process_pod("fake", ["no-such-command-anywhere"])
    body["metadata"]["annotations"] = {}
    await request(cluster.api, "POST", pods, body=body)
    pod = await wait_for(
        lambda: ready(cluster.api, f"{pods}/fake"), timeout=60, message="Ready (fake)"
    )
    assert pod["status"]["phase"] == "Running"


# --- the runtime in-process -----------------------------------------------------------------------


def bare_pod(command: list[str], port: int | None = None) -> dict[str, Any]:
    pod = process_pod(f"p-{uuid.uuid4().hex[:6]}", command, port=port)
    pod["metadata"].update(namespace="ns", uid=str(uuid.uuid4()))
    return pod


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


async def test_close_kills_every_process_and_status_is_published(tmp_path):
    published: list[dict[str, Any]] = []

    async def publish(pod: dict[str, Any], status: dict[str, Any]) -> None:
        published.append(status)

    runtime = ProcessRuntime(pods_dir=tmp_path)
    runtime.attach(publish)
    (port,) = free_ports(1)
    pod = bare_pod(["python3", "-m", "http.server", str(port), "--bind", "127.1.255.250"], port)
    first = await runtime.start(pod, "127.1.255.250", "127.0.0.1")
    assert first["phase"] == "Running"
    assert condition({"status": first}, "Ready") == "False"  # not listening yet
    await wait_for(
        lambda: any(condition({"status": s}, "Ready") == "True" for s in published),
        timeout=30,
        message="a Ready status",
    )
    pid = next(iter(runtime._pods.values())).containers[0].process.pid
    assert alive(pid)
    await runtime.close()
    assert not alive(pid)


async def test_processes_die_with_a_killed_agent(tmp_path):
    """PR_SET_PDEATHSIG: even a SIGKILLed agent leaves no pod process behind."""
    script = textwrap.dedent(
        f"""
        import asyncio, uuid
        from pathlib import Path
        from jupyternetes_ssa.local_cluster.process_runtime import ProcessRuntime

        async def main():
            runtime = ProcessRuntime(pods_dir=Path({str(tmp_path)!r}))
            pod = {{
                "metadata": {{
                    "name": "sleeper", "namespace": "ns", "uid": str(uuid.uuid4()),
                    "annotations": {{"{RUNTIME_ANNOTATION}": "{PROCESS}"}},
                }},
                "spec": {{"containers": [{{"name": "main", "command": ["sleep", "300"]}}]}},
            }}
            await runtime.start(pod, "127.1.255.251", "127.0.0.1")
            record = next(iter(runtime._pods.values()))
            print(record.containers[0].process.pid, flush=True)
            await asyncio.sleep(300)

        asyncio.run(main())
        """
    )
    agent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],  # the package imports from a bare checkout too
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(agent.stdout.readline), timeout=30)
        pid = int(line)
        assert alive(pid)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    await wait_for(lambda: not alive(pid), timeout=10, message="the pod process to die")


# --- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x$(A)y$(B)z", "xaybz"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$(MISSING)", "$(MISSING)"),
        ("$(A", "$(A"),
        ("$A $", "$A $"),
        ("$", "$"),
        ("$()", "$()"),
        ("100$", "100$"),
    ],
)
def test_expansion_follows_the_kubelet(text, expected):
    assert expand(text, {"A": "a", "B": "b"}) == expected


def test_field_refs():
    pod = {
        "metadata": {"name": "n", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
        "spec": {"nodeName": "node"},
    }
    assert field_value(pod, "status.podIP", "127.1.0.9", "127.0.0.1") == "127.1.0.9"
    assert field_value(pod, "status.hostIP", "127.1.0.9", "127.0.0.1") == "127.0.0.1"
    assert field_value(pod, "metadata.uid", "", "") == "u"
    assert field_value(pod, "spec.nodeName", "", "") == "node"
    assert field_value(pod, "metadata.labels['app']", "", "") == "x"


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0500017F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1
   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1
   2: 0100007F:9C40 0500017F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 103 1
   3: 0202000A:9C41 08080808:0035 02 00000000:00000000 00:00000000 00000000     0        0 104 1
"""


UDP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 201 2 0 0
  1: 0000000000000000FFFF00000100007F:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 202 2 0 0
  2: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 203 2 0 0
"""  # noqa: E501


def test_the_guard_allows_the_pod_ip_and_localhost_only():
    sockets = parse_sockets("tcp", TCP) + parse_sockets("udp6", UDP6)
    assert str(sockets[0].local) == "127.1.0.5" and sockets[0].local_port == 8080
    assert str(sockets[4].local) == "::1"
    assert violations(sockets, {101, 103, 201, 202}, "127.1.0.5") == []
    assert violations(sockets, {102}, "127.1.0.5") == [
        "listens on 0.0.0.0:8081 (tcp), but a pod may listen on its IP 127.1.0.5 or on"
        " localhost only"
    ]
    assert "listens on :::53 (udp6)" in violations(sockets, {203}, "127.1.0.5")[0]
    assert violations(sockets, {101}, "127.1.0.6"), "another pod's IP is not this pod's"
    assert violations(sockets, {104}, "127.1.0.5") == [
        "talks to 8.8.8.8:53 (tcp), but only loopback is allowed"
    ]
    assert violations(sockets, set(), "127.1.0.5") == []
