"""How the fake node "runs" a pod: a pluggable strategy, so a real process can replace it later.

The node agent asks its runtime to start each pod bound to the node and writes back whatever
status the runtime returns; on deletion it asks the runtime to stop the pod first.
"""

from __future__ import annotations

from typing import Any, Protocol

from .kube import now

FAIL_ANNOTATION = "local-cluster.jupyternetes.io/fail"
Object = dict[str, Any]


class PodRuntime(Protocol):
    """What the node agent needs from a pod runtime."""

    async def start(self, pod: Object, pod_ip: str, host_ip: str) -> Object:
        """Start ``pod`` and return the pod ``status`` to write (phase, conditions, ...)."""
        ...

    async def stop(self, pod: Object) -> None:
        """Stop whatever ``start`` started; called before the pod object is removed."""
        ...


class FakeRuntime:
    """Starts nothing: every pod is Running at once, unless annotated to fail."""

    async def start(self, pod: Object, pod_ip: str, host_ip: str) -> Object:
        reason = (pod["metadata"].get("annotations") or {}).get(FAIL_ANNOTATION)
        if reason is not None:
            return failed_status(pod, pod_ip, host_ip, reason or "Failed")
        return running_status(pod, pod_ip, host_ip)

    async def stop(self, pod: Object) -> None:
        return None


def _conditions(ready: bool, stamp: str) -> list[Object]:
    ready_status = "True" if ready else "False"
    return [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": stamp},
        {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        {"type": "Ready", "status": ready_status, "lastTransitionTime": stamp},
        {"type": "ContainersReady", "status": ready_status, "lastTransitionTime": stamp},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
    ]


def _container_status(pod: Object, container: Object, state: Object, ready: bool) -> Object:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": f"local-cluster://{container.get('image', '')}",
        "containerID": f"local-cluster://{pod['metadata']['uid']}/{container['name']}",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
    }


def _addresses(pod_ip: str, host_ip: str, stamp: str) -> Object:
    return {
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": stamp,
    }


def _init_statuses(pod: Object, stamp: str) -> list[Object]:
    done = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": stamp,
            "finishedAt": stamp,
        }
    }
    return [_container_status(pod, c, done, True) for c in pod["spec"].get("initContainers", [])]


def running_status(pod: Object, pod_ip: str, host_ip: str) -> Object:
    """Status of a pod whose containers all run and are ready."""
    stamp = now()
    running = {"running": {"startedAt": stamp}}
    return {
        "phase": "Running",
        "conditions": _conditions(True, stamp),
        **_addresses(pod_ip, host_ip, stamp),
        "initContainerStatuses": _init_statuses(pod, stamp),
        "containerStatuses": [
            _container_status(pod, c, running, True) for c in pod["spec"]["containers"]
        ],
    }


def failed_status(pod: Object, pod_ip: str, host_ip: str, reason: str) -> Object:
    """Status of a pod whose containers exited with an error (``reason`` as the message)."""
    stamp = now()
    exited = {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "message": reason,
            "startedAt": stamp,
            "finishedAt": stamp,
        }
    }
    return {
        "phase": "Failed",
        "reason": "Error",
        "message": reason,
        "conditions": _conditions(False, stamp),
        **_addresses(pod_ip, host_ip, stamp),
        "initContainerStatuses": _init_statuses(pod, stamp),
        "containerStatuses": [
            _container_status(pod, c, exited, False) for c in pod["spec"]["containers"]
        ],
    }
