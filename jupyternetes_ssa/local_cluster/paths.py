"""Where the local cluster finds its build scripts, CRDs, binaries and state.

The same code runs from a source checkout (tools/ and crds/ sit next to the package) and from an
installed wheel (hatch force-includes them as ``jupyternetes_ssa/tools`` and ``.../crds``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_DIR.parent
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def _bundled(name: str) -> Path:
    """Return the packaged copy of ``name`` if present, else the source checkout's."""
    for candidate in (PACKAGE_DIR / name, REPO_ROOT / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find {name}/ in {PACKAGE_DIR} or {REPO_ROOT}")


def tools_dir() -> Path:
    """The directory holding build.sh and the pinned Go modules."""
    return _bundled("tools")


def kube_version() -> str:
    """The Kubernetes release pinned in tools/kube/go.mod (e.g. ``v1.36.3``)."""
    text = (tools_dir() / "kube" / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (\S+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError("tools/kube/go.mod does not pin k8s.io/kubernetes")
    return match.group(1)


def default_bin_dir() -> Path:
    """The binary cache build.sh writes to by default (kept in sync with its logic)."""
    override = os.environ.get("JUPYTERNETES_KUBE_BIN_DIR")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "jupyternetes-ssa" / "kube" / kube_version() / "bin"


def default_state_dir() -> Path:
    """``${XDG_STATE_HOME:-~/.local/state}/jupyternetes-ssa/local-cluster``."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "jupyternetes-ssa" / "local-cluster"
