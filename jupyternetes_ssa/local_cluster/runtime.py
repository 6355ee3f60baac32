"""How the fake node "runs" a pod: a pluggable strategy.

The node agent hands its runtime a ``publish`` callback (``attach``), then asks it to start each
pod bound to the node and writes back the status ``start`` returns. A runtime whose pods change
later (a process becomes ready, or exits) calls ``publish(pod, status)`` at any time; the agent
writes that status in order with everything else it does to the pod. On deletion the agent asks
the runtime to stop the pod first; when the agent itself stops it calls ``close``.

:class:`FakeRuntime` starts nothing; ``process_runtime.ProcessRuntime`` (the agent's default)
runs annotated pods as real local processes and delegates every other pod to a FakeRuntime.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .kube import now

FAIL_ANNOTATION = "local-cluster.jupyternetes.io/fail"
Object = dict[str, Any]
Publish = Callable[[Object, Object], Awaitable[None]]  # (pod, status) -> written


class PodRuntime(Protocol):
    """What the node agent needs from a pod runtime.

    ``attach`` and ``close`` are optional for runtimes loaded with ``--runtime module:Class``:
    the agent only calls them when present.
    """

    def attach(self, publish: Publish) -> None:
        """Receive the callback that writes a pod's new status later (called once, early)."""
        ...

    async def start(self, pod: Object, pod_ip: str, host_ip: str) -> Object:
        """Start ``pod`` and return the pod ``status`` to write (phase, conditions, ...)."""
        ...

    async def stop(self, pod: Object) -> None:
        """Stop whatever ``start`` started; called before the pod object is removed."""
        ...

    async def close(self) -> None:
        """The agent is shutting down: stop everything that still runs."""
        ...


class FakeRuntime:
    """Starts nothing: every pod is Running at once, unless annotated to fail."""

    def attach(self, publish: Publish) -> None:
        return None

    async def start(self, pod: Object, pod_ip: str, host_ip: str) -> Object:
        reason = (pod["metadata"].get("annotations") or {}).get(FAIL_ANNOTATION)
        if reason is not None:
            return failed_status(pod, pod_ip, host_ip, reason or "Failed")
        return running_status(pod, pod_ip, host_ip)

    async def stop(self, pod: Object) -> None:
        return None

    async def close(self) -> None:
        return None


def conditions(ready: bool, stamp: str, ready_stamp: str | None = None) -> list[Object]:
    """The pod conditions of a started pod; Ready/ContainersReady changed at ``ready_stamp``."""
    ready_status = "True" if ready else "False"
    changed = ready_stamp or stamp
    return [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": stamp},
        {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        {"type": "Ready", "status": ready_status, "lastTransitionTime": changed},
        {"type": "ContainersReady", "status": ready_status, "lastTransitionTime": changed},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
    ]


def container_status(pod: Object, container: Object, state: Object, ready: bool) -> Object:
    """One entry of ``containerStatuses``; ``state`` is {"running"|"waiting"|"terminated": ...}."""
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


def addresses(pod_ip: str, host_ip: str, stamp: str) -> Object:
    return {
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": stamp,
    }


def init_statuses(pod: Object, stamp: str) -> list[Object]:
    """Init containers are never run: each is reported as having completed at ``stamp``."""
    done = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": stamp,
            "finishedAt": stamp,
        }
    }
    return [container_status(pod, c, done, True) for c in pod["spec"].get("initContainers", [])]


def running_status(pod: Object, pod_ip: str, host_ip: str) -> Object:
    """Status of a pod whose containers all run and are ready."""
    stamp = now()
    running = {"running": {"startedAt": stamp}}
    return {
        "phase": "Running",
        "conditions": conditions(True, stamp),
        **addresses(pod_ip, host_ip, stamp),
        "initContainerStatuses": init_statuses(pod, stamp),
        "containerStatuses": [
            container_status(pod, c, running, True) for c in pod["spec"]["containers"]
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
        "conditions": conditions(False, stamp),
        **addresses(pod_ip, host_ip, stamp),
        "initContainerStatuses": init_statuses(pod, stamp),
        "containerStatuses": [
            container_status(pod, c, exited, False) for c in pod["spec"]["containers"]
        ],
    }
