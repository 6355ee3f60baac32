"""jupyternetes-ssa: JupyterHub notebook servers on Kubernetes, kept by server-side apply."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jupyternetes-ssa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

GROUP = "kadense.io"
VERSION = "v1"
FIELD_MANAGER = "jupyternetes-ssa"
