"""Run annotated pods as real local processes that serve on their loopback pod IP.

A pod annotated ``local-cluster.jupyternetes.io/runtime: process`` has each container's
``command`` + ``args`` started as a process found on the node agent's PATH (the image is
ignored; with no ``command`` the ``args`` are the whole command line). Every other pod goes to a
:class:`~.runtime.FakeRuntime`, so it behaves exactly as before.

What a process gets, as a kubelet would give it:

* environment: PATH (the agent's, with its Python's bin dir first), HOME (``<pod dir>/home``),
  LANG and HOSTNAME, then the container's ``envFrom`` and ``env`` (:mod:`.pod_env`). A Secret or
  ConfigMap that is missing keeps the pod Pending (``CreateContainerConfigError``) and is retried
  until it appears. ``$(VAR)`` in ``command``/``args`` expands against the container's env.
* working dir: ``workingDir`` when it exists on this machine, else HOME.
* output: stdout and stderr to ``<pod dir>/<container>.log``; the pod dir is
  ``<pods dir>/<namespace>_<name>_<uid>`` (see :func:`pod_dir`) and its logs outlive the pod.

Status: Running with Ready False at once, then Ready when every container that declares
``ports`` accepts TCP connections on ``podIP:containerPort`` (or answers its ``readinessProbe``
``httpGet``/``tcpSocket``, :mod:`.probes`) before the ready timeout (60 s, or the pod's
``local-cluster.jupyternetes.io/ready-timeout`` annotation in seconds); otherwise the pod is
stopped and Failed. A container that exits ends its process group (as a container's PID
namespace would); once none runs the pod is Succeeded (all exited 0) or Failed (the exit code,
reason Error and the output's last lines in the container's ``terminated`` state). A non-zero
exit stops the pod's other containers. Init containers are not run: they are reported Completed.

Network rule: a pod stays on loopback. The pod IP must be loopback or nothing starts; the agent
only ever dials the pod IP (probes ignore ``host``); and a guard (:mod:`.netguard`) looks at the
sockets of the pod's processes every half second and kills the pod (Failed, reason
``NetworkRule``) when one
listens anywhere but on the pod IP or localhost (127.0.0.1, ::1: a wildcard address, another
pod's IP, a real interface) or talks to a non-loopback peer. It detects, it cannot prevent:
nothing here can stop a process from sending a first packet (a DNS query, say) in between.

Each container's process leads its own session; deleting the pod sends SIGTERM to it, then
SIGKILL after the grace period (at most 10 s); they die with the agent too (stopped by
``close``, and PR_SET_PDEATHSIG as a backstop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kube import now
from .netguard import (
    is_loopback,
    listening,
    pod_pids,
    process_table,
    read_sockets,
    socket_inodes,
    violations,
)
from .pod_env import ConfigError, Lookup, base_path, container_env, expand
from .probes import Check, answers, readiness_checks
from .runtime import (
    FakeRuntime,
    Object,
    PodRuntime,
    Publish,
    addresses,
    conditions,
    container_status,
    failed_status,
    init_statuses,
)

log = logging.getLogger("local-cluster.process")
RUNTIME_ANNOTATION = "local-cluster.jupyternetes.io/runtime"
PROCESS = "process"
READY_TIMEOUT_ANNOTATION = "local-cluster.jupyternetes.io/ready-timeout"
READY_TIMEOUT = 60.0
MAX_GRACE = 10.0
SHUTDOWN_GRACE = 3.0
PROBE_EVERY = 0.25
GUARD_EVERY = 0.5
CONFIG_RETRY = 2.0
MESSAGE_LINES = 20
MESSAGE_CHARS = 2048
PR_SET_PDEATHSIG = 1
NETWORK_RULE = "NetworkRule"  # the pod reason when the guard killed it


def is_process_pod(pod: Object) -> bool:
    annotations = pod["metadata"].get("annotations") or {}
    return annotations.get(RUNTIME_ANNOTATION) == PROCESS


def pod_dir(pods_dir: Path, pod: Object) -> Path:
    """Where a process pod keeps its HOME (``home/``) and its containers' logs."""
    meta = pod["metadata"]
    return pods_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


# --- processes -----------------------------------------------------------------------------------

try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no libc
    _libc = None


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: SIGKILL this child when the agent dies, even by SIGKILL."""

    def setup() -> None:
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the agent died before prctl took effect
            os._exit(137)

    return setup


def _tail(path: Path) -> str:
    """The last lines of a log, for a terminated container's message."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 4 * MESSAGE_CHARS, 0))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-MESSAGE_LINES:])[-MESSAGE_CHARS:]


@dataclass
class _Container:
    spec: Object
    log: Path
    process: asyncio.subprocess.Process | None = None
    state: Object = field(default_factory=dict)
    ready: bool = False
    group_gone: bool = False  # its process group was killed after its leader exited

    @property
    def name(self) -> str:
        return self.spec["name"]

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        """Signal the container's whole process group (its session, led by the process)."""
        if self.process is None or self.group_gone:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def end_group(self) -> None:
        """Once the process exited: SIGKILL whatever is left of its session, then forget it.

        Only once: after that the session id may name somebody else's processes.
        """
        if self.process is None or self.group_gone or self.running():
            return
        for pid in pod_pids({self.process.pid}, process_table()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.signal(signal.SIGKILL)
        self.group_gone = True


@dataclass
class _Pod:
    pod: Object
    pod_ip: str
    host_ip: str
    dir: Path
    containers: list[_Container]
    started: str = field(default_factory=now)
    ready_changed: str | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopping: bool = False
    reason: str | None = None
    message: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def sessions(self) -> set[int]:
        return {c.process.pid for c in self.containers if c.process and not c.group_gone}


class ProcessRuntime:
    """Runs pods annotated ``runtime: process`` as local processes; the rest via ``fallback``."""

    def __init__(
        self,
        api: Any = None,
        pods_dir: Path | None = None,
        fallback: PodRuntime | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.api = api  # reads Secrets and ConfigMaps (the agent passes its admin credentials)
        self.pods_dir = pods_dir or Path(tempfile.gettempdir()) / "local-cluster-pods"
        self.fallback = fallback or FakeRuntime()
        self.ready_timeout = ready_timeout
        self._publish: Publish | None = None
        self._pods: dict[str, _Pod] = {}

    def attach(self, publish: Publish) -> None:
        self._publish = publish
        attach = getattr(self.fallback, "attach", None)
        if attach is not None:
            attach(publish)

    async def start(self, pod: Object, pod_ip: str, host_ip: str) -> Object:
        if not is_process_pod(pod):
            return await self.fallback.start(pod, pod_ip, host_ip)
        uid = pod["metadata"]["uid"]
        if uid in self._pods:  # already started: report where it stands
            return self._status(self._pods[uid])
        if not (
            is_loopback(ipaddress.ip_address(pod_ip)) and is_loopback(ipaddress.ip_address(host_ip))
        ):
            return failed_status(pod, pod_ip, host_ip, f"pod IP {pod_ip} is not loopback")
        where = pod_dir(self.pods_dir, pod)
        (where / "home").mkdir(parents=True, exist_ok=True)
        containers = [_Container(c, where / f"{c['name']}.log") for c in pod["spec"]["containers"]]
        record = _Pod(pod, pod_ip, host_ip, where, containers)
        self._pods[uid] = record
        try:
            await self._launch(record)
        except ConfigError as error:
            self._config_error(record, str(error))
            self._spawn_task(record, self._retry_launch(record))
        except BaseException:
            self._pods.pop(uid, None)
            await self._cancel(record)
            await self._terminate(record, 0.0)
            raise
        return self._status(record)

    async def stop(self, pod: Object) -> None:
        record = self._pods.pop(pod["metadata"]["uid"], None)
        if record is None:
            await self.fallback.stop(pod)
            return
        await self._cancel(record)
        await self._terminate(record, _grace(pod if pod.get("spec") else record.pod))
        shutil.rmtree(record.dir / "home", ignore_errors=True)  # the logs stay for post-mortems
        log.info("pod %s: processes stopped", record.ref)

    async def close(self) -> None:
        """Stop every pod's processes (the agent is going down), quickly."""
        records = list(self._pods.values())
        self._pods.clear()
        for record in records:
            await self._cancel(record)
        await asyncio.gather(*(self._terminate(r, SHUTDOWN_GRACE) for r in records))
        close = getattr(self.fallback, "close", None)
        if close is not None:
            await close()

    # -- launching

    async def _launch(self, record: _Pod) -> None:
        """Resolve every container's environment first (ConfigError: nothing starts), then run."""
        pod = record.pod
        lookup = Lookup(self.api, pod["metadata"]["namespace"])
        plans = []
        for container in record.containers:
            env = await container_env(lookup, pod, container.spec, record.pod_ip, record.host_ip)
            plans.append(self._plan(record, container, env))
        for container, (argv, env, cwd) in zip(record.containers, plans, strict=True):
            await self._spawn(record, container, argv, env, cwd)
        started = [c for c in record.containers if c.process is not None]
        for container in started:
            self._spawn_task(record, self._watch(record, container))
        failed = [c for c in record.containers if c.process is None]
        if failed:  # kill the others at once; their watchers publish the pod Failed
            message = failed[0].state["terminated"]["message"]
            record.reason, record.message = "StartError", f"container {failed[0].name}: {message}"
            self._spawn_task(record, self._terminate(record, 0.0))
            return
        for container in started:
            try:
                checks = readiness_checks(container.spec)
            except ValueError as error:
                failing = self._fail(record, "ReadinessProbeError", str(error), 0.0)
                self._spawn_task(record, failing)
                continue
            if checks:
                self._spawn_task(record, self._await_ready(record, container, checks))
            else:
                container.ready = True
        self._spawn_task(record, self._guard(record))

    def _plan(
        self, record: _Pod, container: _Container, own: dict[str, str]
    ) -> tuple[list[str], dict[str, str], Path]:
        home = record.dir / "home"
        env = {
            "PATH": base_path(),
            "HOME": str(home),
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            "HOSTNAME": record.pod["metadata"]["name"],
            **own,
        }
        spec = container.spec
        argv = [expand(a, own) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        working = spec.get("workingDir")
        cwd = Path(working) if working and Path(working).is_dir() else home
        return argv, env, cwd

    async def _spawn(
        self, record: _Pod, container: _Container, argv: list[str], env: dict[str, str], cwd: Path
    ) -> None:
        stamp = now()
        if not argv:
            self._start_error(container, "no command or args: the process runtime ignores images")
            return
        program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        if program is None:
            self._start_error(container, f'exec: "{argv[0]}": executable file not found in $PATH')
            return
        try:
            with open(container.log, "ab") as output:
                container.process = await asyncio.create_subprocess_exec(
                    program,
                    *argv[1:],
                    env=env,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with(os.getpid()),
                )
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            self._start_error(container, f"exec {argv[0]}: {error}")
            return
        container.state = {"running": {"startedAt": stamp}}
        log.info(
            "pod %s: container %s runs %s as pid %d (log %s)",
            record.ref,
            container.name,
            argv,
            container.process.pid,
            container.log,
        )

    def _start_error(self, container: _Container, message: str) -> None:
        stamp = now()
        container.state = {
            "terminated": {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": stamp,
                "finishedAt": stamp,
            }
        }
        with contextlib.suppress(OSError), open(container.log, "a") as output:
            output.write(f"local-cluster: {message}\n")

    def _config_error(self, record: _Pod, message: str) -> None:
        for container in record.containers:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": message}
            }

    async def _retry_launch(self, record: _Pod) -> None:
        """Until the missing Secret/ConfigMap shows up (or the pod goes), as the kubelet does."""
        message = None
        while not record.stopping:
            await asyncio.sleep(CONFIG_RETRY)
            try:
                await self._launch(record)
            except Exception as error:  # ConfigError, or the apiserver failing us
                if not isinstance(error, ConfigError):
                    log.warning("pod %s: launch failed", record.ref, exc_info=True)
                if str(error) != message:
                    message = str(error)
                    self._config_error(record, message)
                    await self._publish_status(record)
                continue
            await self._publish_status(record)
            return

    # -- while it runs

    async def _watch(self, record: _Pod, container: _Container) -> None:
        """Wait for the process to exit; end its group; publish; a failure stops the pod."""
        assert container.process is not None
        code = await container.process.wait()
        container.end_group()  # what is left of its session goes with it, as in a container
        started = container.state.get("running", {}).get("startedAt", record.started)
        exit_code = code if code >= 0 else 128 - code
        container.state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "message": _tail(container.log),
                "startedAt": started,
                "finishedAt": now(),
            }
        }
        if container.ready:
            container.ready = False
            record.ready_changed = now()
        log.info("pod %s: container %s exited with %d", record.ref, container.name, exit_code)
        if exit_code != 0:
            if record.reason is None:
                record.reason = "Error"
                record.message = f"container {container.name} exited with code {exit_code}"
            await self._terminate(record, _grace(record.pod))
        await self._publish_status(record)

    async def _await_ready(self, record: _Pod, container: _Container, checks: list[Check]) -> None:
        timeout = _ready_timeout(record.pod, self.ready_timeout)
        deadline = time.monotonic() + timeout
        while container.running():
            results = [await answers(record.pod_ip, check) for check in checks]
            if all(results):
                container.ready = True
                if all(c.ready for c in record.containers):
                    record.ready_changed = now()
                    log.info("pod %s: ready", record.ref)
                await self._publish_status(record)
                return
            if time.monotonic() >= deadline:
                where = ", ".join(c.describe(record.pod_ip) for c in checks)
                heard = listening(pod_pids(record.sessions(), process_table()))
                await self._fail(
                    record,
                    "ReadinessTimeout",
                    f"container {container.name} did not answer on {where} within {timeout:g}s"
                    f" (its processes listen on: {', '.join(heard) or 'nothing'})",
                    _grace(record.pod),
                )
                return
            await asyncio.sleep(PROBE_EVERY)

    async def _guard(self, record: _Pod) -> None:
        """Kill the pod as soon as one of its processes leaves loopback."""
        while any(c.running() for c in record.containers):
            pids = pod_pids(record.sessions(), process_table())
            found = violations(read_sockets(), socket_inodes(pids), record.pod_ip)
            if found:
                await self._fail(record, NETWORK_RULE, "; ".join(sorted(set(found))), 0.0)
                return
            await asyncio.sleep(GUARD_EVERY)

    async def _fail(self, record: _Pod, reason: str, message: str, grace: float) -> None:
        """Stop the pod for ``reason``; the exit watchers then publish it Failed."""
        if record.reason is None:
            record.reason, record.message = reason, message
        log.warning("pod %s: %s: %s", record.ref, reason, message)
        await self._terminate(record, grace)

    # -- stopping

    def _spawn_task(self, record: _Pod, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        record.tasks.add(task)
        task.add_done_callback(lambda t: _finished(record, t))

    async def _cancel(self, record: _Pod) -> None:
        """No more publishing or probing: the pod is being stopped."""
        record.stopping = True
        tasks = [t for t in record.tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _terminate(self, record: _Pod, grace: float) -> None:
        """SIGTERM every running container's group, SIGKILL after ``grace``; wait for them."""
        running = [c for c in record.containers if c.running()]
        for container in running:
            container.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        waits = [asyncio.ensure_future(c.process.wait()) for c in running if c.process]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace if grace > 0 else 5.0)
            if pending:
                for container in running:
                    container.signal(signal.SIGKILL)
                await asyncio.wait(pending, timeout=5.0)
        for container in running:
            container.end_group()

    async def _publish_status(self, record: _Pod) -> None:
        """Hand the pod's current status to the agent; statuses go out in the order computed."""
        if self._publish is None or record.stopping:
            return
        async with record.lock:
            if not record.stopping:
                await self._publish(record.pod, self._status(record))

    # -- status

    def _status(self, record: _Pod) -> Object:
        pod, states = record.pod, [c.state for c in record.containers]
        if all("terminated" in s for s in states):
            ok = all(s["terminated"]["exitCode"] == 0 for s in states)
            phase = "Succeeded" if ok else "Failed"
        elif any("waiting" in s for s in states):
            phase = "Pending"
        else:
            phase = "Running"
        ready = phase == "Running" and all(c.ready and c.running() for c in record.containers)
        status: Object = {
            "phase": phase,
            "conditions": conditions(ready, record.started, record.ready_changed),
            **addresses(record.pod_ip, record.host_ip, record.started),
            "initContainerStatuses": init_statuses(pod, record.started),
            "containerStatuses": [
                container_status(pod, c.spec, c.state, c.ready and c.running())
                for c in record.containers
            ],
        }
        if phase == "Failed":
            status["reason"] = record.reason or "Error"
            status["message"] = record.message or "a container failed"
        return status


def _grace(pod: Object) -> float:
    """The pod's termination grace period, at most MAX_GRACE seconds."""
    seconds = pod["metadata"].get("deletionGracePeriodSeconds")
    if seconds is None:
        seconds = pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
    return float(min(max(seconds, 0), MAX_GRACE))


def _ready_timeout(pod: Object, default: float) -> float:
    value = (pod["metadata"].get("annotations") or {}).get(READY_TIMEOUT_ANNOTATION)
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _finished(record: _Pod, task: asyncio.Task[None]) -> None:
    record.tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("pod %s: runtime task failed", record.ref, exc_info=task.exception())
