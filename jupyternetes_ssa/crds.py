"""Our CRDs, read from `crds/` in a source tree or from the copy packaged in the wheel."""

from __future__ import annotations

from pathlib import Path

import yaml

_PACKAGE = Path(__file__).resolve().parent


def crd_dir() -> Path:
    for candidate in (_PACKAGE / "crds", _PACKAGE.parent / "crds"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no crds/ folder next to the jupyternetes_ssa package")


def crd_texts() -> list[str]:
    return [p.read_text() for p in sorted(crd_dir().glob("*.yaml"))]


def crd_manifests() -> list[dict]:
    return [yaml.safe_load(t) for t in crd_texts()]
