"""Start, check and stop the control-plane processes without killing an unrelated process.

Each process gets its own session (so Ctrl-C in the shell that ran ``up`` does not stop the
cluster), a log file and a pid file. A pid alone can be recycled by the kernel, so we also record
the process start time from /proc and only signal a pid whose start time still matches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Proc:
    """A process we started: enough to find it again from another Python process."""

    name: str
    pid: int
    start_time: int
    log: str
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Proc:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),  # type: ignore[call-overload]
            start_time=int(data["start_time"]),  # type: ignore[call-overload]
            log=str(data["log"]),
            argv=tuple(data["argv"]),  # type: ignore[arg-type]
        )


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int:
    """The kernel's start time of ``pid`` (clock ticks since boot), -1 if there is none."""
    fields = _stat(pid)
    return int(fields[19]) if fields else -1


def spawn(
    name: str,
    argv: Sequence[str],
    state_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Proc:
    """Start ``argv`` detached, logging to logs/<name>.log and recording pids/<name>.pid."""
    log = state_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    (state_dir / "pids").mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=state_dir,
        )
    _children[popen.pid] = popen
    (state_dir / "pids" / f"{name}.pid").write_text(f"{popen.pid}\n")
    return Proc(name, popen.pid, start_time(popen.pid), str(log), tuple(argv))


def alive(proc: Proc) -> bool:
    """True while the very process we started runs (not a zombie, not a recycled pid)."""
    child = _children.get(proc.pid)
    if child is not None and child.poll() is not None:
        return False
    fields = _stat(proc.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == proc.start_time


def _signal(proc: Proc, sig: signal.Signals) -> None:
    if alive(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def stop(procs: Sequence[Proc], timeout: float = 10.0) -> None:
    """Stop processes one by one, last started first: SIGTERM, then SIGKILL after ``timeout``.

    One at a time on purpose: etcd stopped under a live apiserver makes both linger for seconds,
    while apiserver-then-etcd takes about one second in total.
    """
    for proc in reversed(procs):
        _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        _signal(proc, signal.SIGKILL)
        _reap(proc)


def _reap(proc: Proc) -> None:
    """Collect our own children so they do not linger as zombies."""
    child = _children.pop(proc.pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def log_tail(proc: Proc, lines: int = 20) -> str:
    """The last lines of a process's log, to explain why it died."""
    try:
        text = Path(proc.log).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
