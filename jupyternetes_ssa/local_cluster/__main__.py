"""``python -m jupyternetes_ssa.local_cluster up|down|env|status``."""

from .cli import app

app(prog_name="local-cluster")
