"""Shared fixtures: a real Kubernetes API server for integration tests.

Choose the cluster with ``pytest --cluster-backend=NAME`` or ``JUPYTERNETES_TEST_CLUSTER=NAME``
(the option wins):

``local`` (default)
    A private control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and our
    fake node) started in a temporary state dir for this session and removed at its end. Binaries
    come from the per-user cache; the first run ever builds them (minutes).
``kind``
    pytest-kind's ``kind_cluster`` fixture (needs Docker, internet and ``pip install .[kind]``).
``existing``
    Whatever ``KUBECONFIG`` (or ~/.kube/config) points at, e.g. after
    ``eval "$(jupyternetes-ssa local-cluster env)"``. Our CRDs are applied to it.

The ``cluster`` fixture is lazy: only tests that request it (directly or through ``namespace``)
start a cluster, and they are marked ``integration`` automatically, so ``tests/unit`` never does.

Fixtures: ``cluster`` (session) with ``.kubeconfig``, ``.api`` (kr8s), ``.kube`` (the package's
client over it: every request goes through ``jupyternetes_ssa.kube``), ``.backend``, ``.bin_dir``,
``.local`` (with ``.audit_log``); ``namespace`` (a fresh ``t-xxxxxxxx`` namespace, deleted
afterwards); ``sa_kubeconfig`` (factory: rules -> kubeconfig of a ServiceAccount with only those
rules).
Wait on conditions with ``jupyternetes_ssa.local_cluster.wait_for``, never with bare sleeps.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("jupyternetes_ssa") is None:  # a checkout that is not installed
    sys.path.insert(0, str(REPO_ROOT))

import kr8s.asyncio  # noqa: E402

from jupyternetes_ssa import local_cluster  # noqa: E402
from jupyternetes_ssa.kube import Kube  # noqa: E402

BACKENDS = ("local", "kind", "existing")
ENV_VAR = "JUPYTERNETES_TEST_CLUSTER"


@dataclass
class Cluster:
    """What integration tests get: a kubeconfig, an async kr8s Api bound to it, and provenance."""

    kubeconfig: Path
    api: Any  # kr8s.asyncio.Api
    backend: str
    bin_dir: Path | None = None
    local: local_cluster.LocalCluster | None = None

    @property
    def kube(self) -> Kube:
        """The package's client (its one door to the apiserver) over ``api``."""
        return Kube(self.api)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster-backend",
        choices=BACKENDS,
        default=None,
        help=f"cluster for integration tests: local (default), kind, existing [env {ENV_VAR}]",
    )


def pytest_configure(config: pytest.Config) -> None:
    # kr8s 0.20 warns about every apiserver newer than it knows; the API we use is stable.
    config.addinivalue_line("filterwarnings", "ignore:Kubernetes version .* is not supported")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever needs a cluster is an integration test, whether or not its module says so."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


def _backend(config: pytest.Config) -> str:
    backend = config.getoption("--cluster-backend") or os.environ.get(ENV_VAR) or "local"
    if backend not in BACKENDS:
        raise pytest.UsageError(f"{ENV_VAR}={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


async def _api(kubeconfig: Path) -> Any:
    # kr8s caches Api objects per argument set: pass the kubeconfig explicitly, never rely on env.
    return await kr8s.asyncio.api(kubeconfig=str(kubeconfig))


@pytest.fixture(scope="session")
async def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    """A real apiserver with our CRDs installed, for the whole session."""
    backend = _backend(request.config)
    if backend == "local":
        state_dir = tmp_path_factory.mktemp("local-cluster")
        running = await asyncio.to_thread(local_cluster.up, state_dir, owner_pid=os.getpid())
        try:
            api = await _api(running.kubeconfig)
            yield Cluster(running.kubeconfig, api, backend, running.bin_dir, running)
        finally:
            await asyncio.to_thread(local_cluster.down, state_dir)
        return
    kubeconfig = _kind_kubeconfig(request) if backend == "kind" else _current_kubeconfig()
    api = await _api(kubeconfig)
    await local_cluster.install_crds(api)
    yield Cluster(kubeconfig, api, backend)


def _kind_kubeconfig(request: pytest.FixtureRequest) -> Path:
    """pytest-kind's cluster; the plugin is only looked up when this backend is chosen."""
    if importlib.util.find_spec("pytest_kind") is None:
        raise pytest.UsageError("the kind backend needs pytest-kind: pip install '.[kind]'")
    return Path(request.getfixturevalue("kind_cluster").kubeconfig_path)


def _current_kubeconfig() -> Path:
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    kubeconfig = Path(path) if path else Path.home() / ".kube" / "config"
    if not kubeconfig.is_file():
        raise pytest.UsageError(f"the existing backend needs a kubeconfig; {kubeconfig} is absent")
    return kubeconfig


@pytest.fixture
async def namespace(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods need it); deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"jupyternetes-ssa/test": "true"}},
    }
    kube = cluster.kube
    await kube.call("POST", "/api/v1/namespaces", body=body)
    account = f"/api/v1/namespaces/{name}/serviceaccounts/default"
    await local_cluster.wait_for(
        lambda: kube.call("GET", account, ignore=(404,)),
        timeout=60,
        message=f"ServiceAccount {name}/default",
    )
    yield name
    await kube.call("DELETE", f"/api/v1/namespaces/{name}", ignore=(404,))


@pytest.fixture
def sa_kubeconfig(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> Callable[..., Awaitable[Path]]:
    """Factory: ``await sa_kubeconfig(rules, name="narrow")`` -> kubeconfig of a narrow identity.

    Creates ServiceAccount + Role(rules) + RoleBinding in ``namespace`` and a TokenRequest token.
    """

    async def make(rules: list[dict[str, Any]], name: str = "narrow") -> Path:
        out = tmp_path / f"{name}.kubeconfig"
        return await local_cluster.service_account_kubeconfig(
            cluster.api, cluster.kubeconfig, namespace, rules, out, name=name
        )

    return make


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[Kube]:
    """The package's client for one test: its own aiohttp session on the shared kr8s Api (a
    test may spy on it or break it), closed after the test (kr8s' own session stays open for
    the others)."""
    client = Kube(cluster.api)
    yield client
    if client.http is not None:
        await client.http.close()
