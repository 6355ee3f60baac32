"""Run annotated pods as real local processes that serve on their loopback pod IP.

A pod annotated ``local-cluster.jupyternetes.io/runtime: process`` has each container's
``command`` + ``args`` started as a process found on the node agent's PATH (the image is
ignored; with no ``command`` the ``args`` are the whole command line). Every other pod goes to a
:class:`~.runtime.FakeRuntime`, so it behaves exactly as before.

What a process gets, as a kubelet would give it:

* environment: PATH (the agent's, with its Python's bin dir first), HOME (``<pod dir>/home``),
  LANG and HOSTNAME, then the container's ``envFrom`` and ``env``: plain values with ``$(VAR)``
  references to earlier entries expanded (``$$`` escapes), ``secretKeyRef``/``configMapKeyRef``
  (``optional`` honoured) and ``fieldRef`` (name, namespace, uid, labels, annotations, node,
  service account, pod and host IPs). A Secret or ConfigMap that is missing keeps the pod
  Pending (``CreateContainerConfigError``) and is retried until it appears.
  ``$(VAR)`` in ``command``/``args`` expands against the container's env.
* working dir: ``workingDir`` when it exists on this machine, else HOME.
* output: stdout and stderr to ``<pod dir>/<container>.log``; the pod dir is
  ``<pods dir>/<namespace>_<name>_<uid>`` (see :func:`pod_dir`) and its logs outlive the pod.

Status: Running with Ready False at once, then Ready when every container that declares
``ports`` accepts TCP connections on ``podIP:containerPort`` (or answers its ``readinessProbe``
``httpGet``/``tcpSocket``) before the ready timeout (60 s, or the pod's
``local-cluster.jupyternetes.io/ready-timeout`` annotation in seconds); otherwise the pod is
stopped and Failed. A container that exits ends its process group (as a container's PID
namespace would); once none runs the pod is Succeeded (all exited 0) or Failed (the exit code,
reason Error and the output's last lines in the container's ``terminated`` state). A non-zero
exit stops the pod's other containers. Init containers are not run: they are reported Completed.

Network rule: a pod stays on loopback. The pod IP must be loopback or nothing starts; the agent
only ever dials the pod IP (probes ignore ``host``); and a guard looks at the sockets of the
pod's processes every half second and kills the pod (Failed, reason ``NetworkRule``) when one
listens anywhere but on the pod IP or localhost (127.0.0.1, ::1: a wildcard address, another
pod's IP, a real interface) or talks to a non-loopback peer. It detects, it cannot prevent:
nothing here can stop a process from sending a first packet (a DNS query, say) in between.

Each container's process leads its own session; deleting the pod sends SIGTERM to it, then
SIGKILL after the grace period (at most 10 s); they die with the agent too (stopped by
``close``, and PR_SET_PDEATHSIG as a backstop).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import ipaddress
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .kube import now, request
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
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
PR_SET_PDEATHSIG = 1
NETWORK_RULE = "NetworkRule"  # the pod reason when the guard killed it


class ConfigError(Exception):
    """The container's env cannot be resolved (yet): the kubelet's CreateContainerConfigError."""


def is_process_pod(pod: Object) -> bool:
    annotations = pod["metadata"].get("annotations") or {}
    return annotations.get(RUNTIME_ANNOTATION) == PROCESS


def pod_dir(pods_dir: Path, pod: Object) -> Path:
    """Where a process pod keeps its HOME (``home/``) and its containers' logs."""
    meta = pod["metadata"]
    return pods_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


# --- $(VAR) expansion, as k8s.io/kubernetes/third_party/forked/golang/expansion ------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` from ``env``; unknown references stay as they are, ``$$`` is ``$``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":  # an escaped operator
                out.append("$")
                cursor += 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:  # an incomplete reference: keep "$(" and go on after it
                    out.append("$(")
                    cursor += 1
                else:
                    name = text[cursor + 2 : closer]
                    out.append(env.get(name, f"$({name})"))
                    cursor = closer
            else:  # a "$" that starts no expression
                out.append("$" + following)
                cursor += 1
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# --- environment ---------------------------------------------------------------------------------


class _Lookup:
    """Secrets and ConfigMaps of one namespace, each read once per launch."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self._cache: dict[tuple[str, str], Object | None] = {}

    async def data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """The object's data (Secret values decoded); None if it is absent and ``optional``."""
        key = (kind, name)
        if key not in self._cache:
            path = f"/api/v1/namespaces/{self.namespace}/{kind}s/{name}"
            try:
                self._cache[key] = await request(self.api, "GET", path, ignore=(404,))
            except Exception as error:
                raise ConfigError(f"cannot read {kind} {self.namespace}/{name}: {error}") from error
        obj = self._cache[key]
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{name}" not found')
        if kind == "secret":
            return {
                k: base64.b64decode(v).decode("utf-8", "surrogateescape")
                for k, v in (obj.get("data") or {}).items()
            }
        return dict(obj.get("data") or {})

    async def value(self, kind: str, ref: Object) -> str | None:
        """The value of a ``secretKeyRef``/``configMapKeyRef``; None when optional and absent."""
        optional = bool(ref.get("optional"))
        data = await self.data(kind, ref.get("name", ""), optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            kind_name = "Secret" if kind == "secret" else "ConfigMap"
            raise ConfigError(
                f"couldn't find key {ref['key']} in {kind_name} {self.namespace}/{ref.get('name')}"
            )
        return data[ref["key"]]


def field_value(pod: Object, path: str, pod_ip: str, host_ip: str) -> str:
    """A ``fieldRef`` as the kubelet resolves it."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.*)'\])?", path)
    if match:
        values = meta.get(match.group(1)) or {}
        if match.group(2) is not None:
            return values.get(match.group(2), "")
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


async def container_env(
    lookup: _Lookup, pod: Object, container: Object, pod_ip: str, host_ip: str
) -> dict[str, str]:
    """The variables the container defines (``envFrom``, then ``env``), resolved in order."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind, ref = (
            ("secret", source["secretRef"])
            if "secretRef" in source
            else ("configmap", source.get("configMapRef") or {})
        )
        data = await lookup.data(kind, ref.get("name", ""), bool(ref.get("optional")))
        for key, value in (data or {}).items():
            name = source.get("prefix", "") + key
            if ENV_NAME.match(name):
                env[name] = value
    for var in container.get("env") or []:
        name, value = var["name"], var.get("value", "")
        if value:
            env[name] = expand(value, env)
            continue
        source = var.get("valueFrom")
        if not source:
            env[name] = ""
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "secret" if "secretKeyRef" in source else "configmap"
            resolved = await lookup.value(
                kind, source.get("secretKeyRef") or source["configMapKeyRef"]
            )
            if resolved is not None:
                env[name] = resolved
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
    return env


def _base_path() -> str:
    """The agent's PATH with its own interpreter's bin dir first (the venv's tools)."""
    path = os.environ.get("PATH") or os.defpath
    own = os.path.dirname(sys.executable)
    parts = path.split(os.pathsep)
    return path if own in parts else os.pathsep.join([own, *parts])


# --- the network guard ---------------------------------------------------------------------------


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


def _loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
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
        elif s.remote_port and not _loopback(s.remote):
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


# --- readiness -----------------------------------------------------------------------------------


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


async def _answers(ip: str, check: Check) -> bool:
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
            _loopback(ipaddress.ip_address(pod_ip)) and _loopback(ipaddress.ip_address(host_ip))
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
        lookup = _Lookup(self.api, pod["metadata"]["namespace"])
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
            "PATH": _base_path(),
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
            results = [await _answers(record.pod_ip, check) for check in checks]
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
