"""Render a JupyterNotebookTemplate for a JupyterNotebookInstance: pure functions, no I/O.

(stub: being written; see the interface below)
"""

from __future__ import annotations

from jupyternetes_ssa.types import Manifest, Rendered


def render(template: Manifest, instance: Manifest) -> Rendered:
    """Return every object the instance should have (PVCs first), or raise RenderError."""
    raise NotImplementedError
