"""Faults: transient apiserver errors, stale decisions, and a reconciler killed mid-pass."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from faults import FlakyApi
from reconcile_helpers import once, owned, put, seed_instance, seed_template

from jupyternetes_ssa.kube import POD, ApiError, Kube, RetryPolicy
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.observe import observe, owned_resources
from jupyternetes_ssa.prune import plan_prune, prune
from jupyternetes_ssa.settings import Settings

pytestmark = pytest.mark.integration


async def test_transient_errors_are_retried_and_the_pass_converges(cluster, namespace: str):
    real = Kube(cluster.api)
    await put(real, seed_template(namespace))
    await put(real, seed_instance(namespace, "jovyan"))
    flaky = FlakyApi(cluster.api, [503, 429, 500, 502, 504, 503])
    kube = Kube(flaky, RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05))

    summary = await once(kube, namespace)

    assert flaky.injected == 6
    assert summary.ok, summary
    pods, pvcs = await owned(real, namespace, "jovyan")
    assert len(pods) == 1 and len(pvcs) == 1


async def test_errors_that_outlast_the_retries_fail_the_pass_without_changes(
    cluster, namespace: str
):
    real = Kube(cluster.api)
    await put(real, seed_template(namespace))
    await put(real, seed_instance(namespace, "jovyan"))
    flaky = FlakyApi(cluster.api, [503] * 3, url_part="persistentvolumeclaims")
    kube = Kube(flaky, RetryPolicy(attempts=3, base_delay=0.01))

    with pytest.raises(ApiError, match="503"):
        await once(kube, namespace)  # one list fails: nothing decided, nothing written

    assert flaky.injected == 3
    assert await owned(real, namespace, "jovyan") == ([], [])


async def test_a_delete_decided_on_a_stale_list_is_refused_by_its_precondition(
    cluster, namespace: str
):
    kube = Kube(cluster.api)
    candidates = await _decided_with_nothing_wanted(kube, namespace)
    assert {c.ref.name for c in candidates if c.allowed} == {"jovyan-notebook", "jovyan-sidecar"}

    # the objects change after the decision (here: another manager labels them)
    for name in ("jovyan-notebook", "jovyan-sidecar"):
        await kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": {"touched": "yes"}},
            },
            field_manager="someone-else",
        )
    deleted = await prune(kube, candidates)

    assert deleted == []  # 409 from the uid/resourceVersion preconditions: left for next pass
    assert await kube.get(POD, namespace, "jovyan-sidecar") is not None


async def test_a_reconciler_killed_mid_pass_converges_on_the_next_run(cluster, namespace: str):
    kube = Kube(cluster.api)
    await put(kube, seed_template(namespace))
    names = [f"user{i}" for i in range(30)]
    for name in names:
        await put(kube, seed_instance(namespace, name))
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyternetes_ssa",
            "reconcile",
            "--once",
            "-n",
            namespace,
            "--concurrency",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(
            lambda: _some_pods(kube, namespace),
            timeout=60,
            interval=0.02,
            message="the first pods exist",
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)
    partial = len((await kube.list(POD, namespace)).items)

    summary = await once(kube, namespace)

    assert summary.ok, summary
    pods = (await kube.list(POD, namespace)).items
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(f"{n}-notebook" for n in names)
    assert partial < len(names), "the kill came too late to test anything"


async def _some_pods(kube: Kube, ns: str) -> bool:
    return len((await kube.list(POD, ns)).items) > 0


async def test_a_delete_goes_ahead_when_only_unrelated_fields_changed_since_the_list(
    cluster, namespace: str
):
    kube = Kube(cluster.api)
    candidates = [
        c
        for c in await _decided_with_nothing_wanted(kube, namespace)
        if c.ref.name == "jovyan-sidecar"
    ]
    await kube.apply(  # a new resourceVersion, same labels: e.g. someone's annotation
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "jovyan-sidecar",
                "namespace": namespace,
                "annotations": {"example.com/seen": "yes"},
            },
        },
        field_manager="someone-else",
    )

    deleted = await prune(kube, candidates)

    assert [c.ref.name for c in deleted] == ["jovyan-sidecar"]


async def _decided_with_nothing_wanted(kube: Kube, namespace: str) -> list:
    """A converged instance with a notebook and a sidecar pod, and the prune plan of a pass that
    (as if its template were emptied) wants none of them."""
    template = seed_template(namespace)
    template["spec"]["pods"].append(
        {"name": "sidecar", "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    )
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))
    assert (await once(kube, namespace)).ok
    settings = Settings(namespaces=(namespace,))
    observed = await observe(kube, settings, await owned_resources(kube, settings))
    return plan_prune(observed, {(namespace, "jovyan"): set()})
