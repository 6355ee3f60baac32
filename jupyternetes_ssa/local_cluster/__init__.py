"""A real Kubernetes control plane as plain local processes (envtest style), for tests and demos.

    from jupyternetes_ssa import local_cluster
    cluster = local_cluster.up()    # builds binaries on first use (minutes), then ~10 s
    cluster.kubeconfig, cluster.apiserver_url, cluster.bin_dir
    local_cluster.down()

Or from a shell: ``jupyternetes-ssa local-cluster up|down|env|status``.
"""

from .build import ensure_binaries, missing_binaries
from .cluster import DEFAULT_NODE, LocalCluster, down, status, up
from .crds import install_crds, load_crds
from .identity import service_account_kubeconfig
from .paths import default_bin_dir, default_state_dir, tools_dir
from .waiting import wait_for, wait_until

__all__ = [
    "DEFAULT_NODE",
    "LocalCluster",
    "default_bin_dir",
    "default_state_dir",
    "down",
    "ensure_binaries",
    "install_crds",
    "load_crds",
    "missing_binaries",
    "service_account_kubeconfig",
    "status",
    "tools_dir",
    "up",
    "wait_for",
    "wait_until",
]
