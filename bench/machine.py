"""The machine a run happened on, recorded with every result: figures mean nothing without it."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyternetes_ssa import __version__

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` of /proc/cpuinfo (x86) or ``Hardware``/``Processor`` (arm)."""
    for key in ("model name", "Hardware", "Processor"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or "unknown"


def mem_total_kib(meminfo: str) -> int | None:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def git_revision() -> str:
    """``git describe --always --dirty`` of the checkout (``dirty``: uncommitted edits ran too)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def machine_info(kubernetes_version: str) -> dict[str, Any]:
    mem = mem_total_kib(_read("/proc/meminfo"))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": cpu_model(_read("/proc/cpuinfo")),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 1024**2, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kubernetes": kubernetes_version,
        "jupyternetes_ssa": __version__,
        "git": git_revision(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
