"""All the reconciler's knobs, as one typed object (built by the CLI, read everywhere else)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from jupyternetes_ssa.shard import Shard


def _own_namespace() -> str:
    """Where the reconciler runs: POD_NAMESPACE, else its in-cluster service account's."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            found = f.read().strip()
    except OSError:
        found = ""
    return os.environ.get("POD_NAMESPACE") or found or "default"


def _identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # instances served; empty = every namespace
    template_namespaces: tuple[str, ...] = ()  # where templates may come from; empty = anywhere
    catalog_namespaces: tuple[str, ...] = ()  # their templates serve every served namespace
    allow_kinds: tuple[str, ...] = ()  # otherResources kinds templates may create (Kind[.group])
    recreate_pods: bool = False  # every pod item updateStrategy Recreate (strategy.py)
    dry_run: bool = False  # compute and report, write nothing
    concurrency: int = 8  # instances reconciled at once
    gc_concurrency: int = 20  # deletes at once when collecting (Kubernetes' GC: 20 workers)
    resync_seconds: float = 300.0  # continuous mode: full pass this often
    status_interval_seconds: float = 3.0  # continuous: progress-only status writes this far apart
    watch_timeout_seconds: int = 300  # server-side watch timeout before a re-watch
    backoff_base: float = 1.0  # per-instance retry backoff after an error...
    backoff_max: float = 300.0  # ...doubling up to this
    leader_elect: bool = False
    lease_name: str = "jupyternetes-ssa"
    lease_namespace: str = "default"
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    identity: str = field(default_factory=_identity)
    health_port: int = 8080  # /healthz /readyz /metrics; 0 = off
    health_host: str = "0.0.0.0"
    key_namespace: str = field(default_factory=_own_namespace)  # sealing keys (keys.py)
    shard: Shard = field(
        default_factory=Shard
    )  # --shard I/N: serve only these instances (shard.py); 0/1 = all

    def template_allowed(self, namespace: str) -> bool:
        """--template-namespace restricts where templates come from; a catalogue is one such."""
        allowed = self.template_namespaces + self.catalog_namespaces
        return not self.template_namespaces or namespace in allowed
