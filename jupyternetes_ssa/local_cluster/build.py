"""Build the control-plane binaries on first use, reuse the per-user cache afterwards."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .paths import BINARIES, default_bin_dir, tools_dir


def missing_binaries(bin_dir: Path) -> list[str]:
    """Names of the control-plane binaries not yet built into ``bin_dir``."""
    return [name for name in BINARIES if not (bin_dir / name).is_file()]


def ensure_binaries(bin_dir: Path | None = None) -> Path:
    """Run tools/build.sh if a binary is missing; return the directory holding them all.

    A cold build takes many minutes (Kubernetes is large), so its progress goes to stderr; a file
    lock keeps two concurrent callers from compiling the same thing twice.
    """
    bin_dir = bin_dir or default_bin_dir()
    if not missing_binaries(bin_dir):
        return bin_dir
    if shutil.which("go") is None:
        raise RuntimeError(
            f"missing {', '.join(missing_binaries(bin_dir))} in {bin_dir} and no `go` on PATH "
            "to build them (install Go >= 1.26, or set JUPYTERNETES_KUBE_BIN_DIR to prebuilt ones)"
        )
    bin_dir.mkdir(parents=True, exist_ok=True)
    with open(bin_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if missing_binaries(bin_dir):
            _run_build(bin_dir)
    return bin_dir


def _run_build(bin_dir: Path) -> None:
    """Run build.sh with all its output on stderr, so stdout stays machine-readable."""
    missing = ", ".join(missing_binaries(bin_dir))
    print(f"local-cluster: building {missing} (minutes on a cold Go cache)", file=sys.stderr)
    start = time.monotonic()
    script = tools_dir() / "build.sh"
    err = _stderr_fd()
    result = subprocess.run(
        ["bash", str(script), str(bin_dir)], stdout=err, stderr=err, check=False
    )
    if result.returncode != 0 or missing_binaries(bin_dir):
        raise RuntimeError(f"{script} failed (exit {result.returncode}); see the output above")
    print(f"local-cluster: built in {time.monotonic() - start:.0f}s", file=sys.stderr)


def _stderr_fd() -> int:
    """File descriptor 2 even when sys.stderr was replaced (e.g. by pytest's capture)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        return 2
