"""Run the contenders as child processes and measure them the same way.

Peak RSS comes from the kernel's own accounting for that one child: ``os.wait4`` returns the
rusage of exactly the reaped process (``RUSAGE_CHILDREN`` would be the maximum over every child so
far). The long-running reconciler is sampled from /proc/PID/status instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.machine import REPO_ROOT


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment minus proxies (all traffic is to 127.0.0.1), with bench importable."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.pop("KUBECONFIG", None)  # every command gets --kubeconfig explicitly
    return env | (extra or {})


@dataclass(frozen=True)
class ProcessRun:
    argv: tuple[str, ...]
    wall_s: float
    cpu_s: float  # user + system: less sensitive than wall time to a busy machine
    max_rss_kib: int
    exit_code: int
    stdout: Path
    stderr: Path
    timed_out: bool = False

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-lines:])


def run_measured(
    argv: list[str], *, env: dict[str, str], logs: Path, name: str, timeout: float
) -> ProcessRun:
    """Run ``argv`` to completion (killed after ``timeout`` s); wall time and its own peak RSS."""
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env)
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        proc.kill()

    killer = threading.Timer(timeout, kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return ProcessRun(
        tuple(argv),
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss,  # KiB on Linux
        proc.returncode,
        out,
        err,
        timed_out=expired.is_set(),
    )


def parse_proc_status(text: str) -> dict[str, int]:
    """The ``kB`` fields of /proc/PID/status (VmRSS, VmHWM, ...) as KiB."""
    fields = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[key] = int(parts[0])
    return fields


def parse_proc_stat_cpu(text: str, ticks_per_second: int) -> float:
    """User + system CPU seconds from /proc/PID/stat (fields 14 and 15, counted after the
    parenthesised command name, which may itself contain spaces and parentheses)."""
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


class Background:
    """A long-running child (continuous reconciler) whose memory can be sampled while it runs."""

    def __init__(self, argv: list[str], *, env: dict[str, str], logs: Path, name: str):
        self.log = logs / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak so far) in KiB."""
        status = parse_proc_status(Path(f"/proc/{self.pid}/status").read_text())
        return {"rss": status.get("VmRSS", 0), "hwm": status.get("VmHWM", 0)}

    def cpu_s(self) -> float:
        """CPU seconds used so far (user + system)."""
        text = Path(f"/proc/{self.pid}/stat").read_text()
        return parse_proc_stat_cpu(text, os.sysconf("SC_CLK_TCK"))

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the reconciler's clean shutdown), SIGKILL if it does not exit in time."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
