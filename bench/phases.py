"""The measured phases, one function per contender and size.

Each contender works in its own fresh namespace, which is deleted (and waited for) before the
next one starts, so no phase measures another's clean-up. Every wait is a condition with a
deadline that grows with N; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import promtext, stats, workload
from bench.attribution import Requests, Snapshot, all_clients, subject_requests
from bench.cluster import Scraper, delete_namespace, fresh_namespace
from bench.procs import Background, ProcessRun, child_env, run_measured
from bench.tracker import Tracker
from jupyternetes_ssa.kube import INSTANCE, Kube
from jupyternetes_ssa.local_cluster import wait_for

log = logging.getLogger("bench")
CONTEXT_RESOURCES = (
    "pods",
    "persistentvolumeclaims",
    "persistentvolumes",
    "jupyternotebookinstances",
    "events",
)


@dataclass
class Env:
    """What every phase needs: the admin client (the hub and observer), the subject's
    kubeconfig (the contenders), the tools, where logs go, and the knobs."""

    admin: Kube
    subject_kubeconfig: Path
    kubectl: Path
    scraper: Scraper
    logs: Path
    concurrency: int = 8
    new_instances: int = 100
    seconds_per_object: float = 0.5

    def deadline(self, n: int) -> float:
        """An upper bound for anything that scales with N on a slow, shared machine."""
        return 120.0 + self.seconds_per_object * n

    def reconcile_argv(self, namespace: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "jupyternetes_ssa",
            "reconcile",
            "-n",
            namespace,
            "--kubeconfig",
            str(self.subject_kubeconfig),
            "--concurrency",
            str(self.concurrency),
            *extra,
        ]

    def kubectl_argv(self, path: Path, cache: Path) -> list[str]:
        """One `kubectl apply --server-side` of every object, as a CronJob pod would run it:
        with a fresh discovery cache."""
        return [
            str(self.kubectl),
            "--kubeconfig",
            str(self.subject_kubeconfig),
            "--cache-dir",
            str(cache),
            "apply",
            "--server-side",
            "-f",
            str(path),
        ]


@dataclass
class Step:
    """One measured run of a contender: times, memory, and its requests as the apiserver saw."""

    wall_s: float
    requests: Requests
    cpu_s: float | None = None
    max_rss_kib: int | None = None
    all_clients: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 4),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
            "max_rss_kib": self.max_rss_kib,
            "requests": self.requests.to_json(),
            "all_clients": self.all_clients,
            **self.extra,
        }


def window(before: Snapshot, after: Snapshot) -> tuple[Requests, dict[str, int]]:
    return subject_requests(before, after), all_clients(before, after, CONTEXT_RESOURCES)


async def measured_process(env: Env, argv: list[str], name: str, timeout: float) -> Step:
    """Run one contender process between two /metrics snapshots; fail loudly if it failed."""
    before = await env.scraper.snapshot()
    run: ProcessRun = await asyncio.to_thread(
        run_measured, argv, env=child_env(), logs=env.logs, name=name, timeout=timeout
    )
    after = await env.scraper.snapshot()
    if run.exit_code != 0:
        why = "timed out" if run.timed_out else f"exited {run.exit_code}"
        raise RuntimeError(f"{name} {why} after {run.wall_s:.1f}s:\n{run.tail()}")
    requests, context = window(before, after)
    step = Step(run.wall_s, requests, run.cpu_s, run.max_rss_kib, context)
    log.info(
        "%s: %.2fs (%.2fs CPU), %d requests (%d writes), peak RSS %d MiB",
        name,
        run.wall_s,
        run.cpu_s,
        requests.total,
        requests.writes,
        run.max_rss_kib // 1024,
    )
    return step


def pass_summary(output: str) -> dict[str, Any]:
    """Counts from `reconcile --once --output json`: what the pass says it did."""
    summary = json.loads(output)
    actions: Counter[str] = Counter()
    for inst in summary["instances"]:
        actions.update(inst["actions"])
    return {
        "ok": summary["ok"],
        "instances": len(summary["instances"]),
        "actions": dict(sorted(actions.items())),
        "status_writes": sum(1 for i in summary["instances"] if i["statusWritten"]),
        "pruned": len(summary["pruned"]),
    }


async def reconcile_once(env: Env, namespace: str, name: str, n: int) -> Step:
    step = await measured_process(
        env, env.reconcile_argv(namespace, "--once", "--output", "json"), name, env.deadline(n)
    )
    step.extra["pass"] = pass_summary((env.logs / f"{name}.out").read_text())
    return step


async def settle(env: Env, namespace: str, n: int) -> float:
    """Seconds until N pods run (with an IP) and N claims are bound, counted from now."""
    started = time.monotonic()
    async with Tracker(env.admin, namespace, env.deadline(n)) as seen:
        await wait_for(
            lambda: seen.settled(n),
            timeout=env.deadline(n),
            interval=0.2,
            message=f"{n} pods running and {n} claims bound in {namespace}",
        )
    return time.monotonic() - started


# --- baseline (a): kubectl apply --server-side ------------------------------------------------
async def bench_kubectl(env: Env, n: int) -> dict[str, Any]:
    ns = f"bench-kubectl-{n}"
    await fresh_namespace(env.admin, ns, env.deadline(n))
    manifests = workload.write_multidoc(workload.rendered(ns, n), env.logs / f"kubectl-{n}.yaml")
    changed = workload.write_multidoc(
        workload.rendered(ns, n, workload.CHANGED_IMAGE), env.logs / f"kubectl-{n}-changed.yaml"
    )
    out: dict[str, Any] = {}

    async def apply(name: str, path: Path) -> dict[str, Any]:
        argv = env.kubectl_argv(path, env.logs / f"kubectl-cache-{name}")
        return (await measured_process(env, argv, name, env.deadline(n))).to_json()

    out["apply"] = await apply(f"kubectl-apply-{n}", manifests)
    out["settle_s"] = await settle(env, ns, n)
    out["idle"] = await apply(f"kubectl-idle-{n}", manifests)
    out["template_change"] = await apply(f"kubectl-change-{n}", changed)
    out["cleanup"] = await delete_namespace(env.admin, ns, env.deadline(n))
    return out


# --- baseline (b): a direct create loop ---------------------------------------------------------
async def bench_create_loop(env: Env, n: int) -> dict[str, Any]:
    ns = f"bench-loop-{n}"
    await fresh_namespace(env.admin, ns, env.deadline(n))
    objects = workload.write_groups(workload.rendered(ns, n), env.logs / f"loop-{n}.json")
    argv = [
        sys.executable,
        "-m",
        "bench.create_loop",
        "--kubeconfig",
        str(env.subject_kubeconfig),
        "--objects",
        str(objects),
        "--concurrency",
        str(env.concurrency),
    ]
    out: dict[str, Any] = {
        "create": (await measured_process(env, argv, f"loop-create-{n}", env.deadline(n))).to_json()
    }
    out["settle_s"] = await settle(env, ns, n)
    out["cleanup"] = await delete_namespace(env.admin, ns, env.deadline(n))
    return out


# --- jupyternetes-ssa ---------------------------------------------------------------------------
async def bench_ours(env: Env, n: int) -> dict[str, Any]:
    """Converge, catch-up, idle, template change in once mode; then continuous mode and GC."""
    ns = f"bench-ours-{n}"
    await fresh_namespace(env.admin, ns, env.deadline(n))
    await workload.put(env.admin, workload.template(ns))
    started = time.monotonic()
    await workload.create_instances(env.admin, ns, range(n))
    out: dict[str, Any] = {"hub_create_s": time.monotonic() - started}
    out["converge"] = (await reconcile_once(env, ns, f"ours-converge-{n}", n)).to_json()
    out["settle_s"] = await settle(env, ns, n)
    # The pods started after the converge pass wrote statuses; this pass reports them running.
    out["catch_up"] = (await reconcile_once(env, ns, f"ours-catch-up-{n}", n)).to_json()
    out["idle"] = (await reconcile_once(env, ns, f"ours-idle-{n}", n)).to_json()
    await workload.put(env.admin, workload.template(ns, workload.CHANGED_IMAGE))
    out["template_change"] = (await reconcile_once(env, ns, f"ours-change-{n}", n)).to_json()
    # Nothing changed since: must be as quiet as the idle pass (a status that flips between
    # consecutive passes would show here as N writes).
    out["after_change"] = (await reconcile_once(env, ns, f"ours-after-change-{n}", n)).to_json()
    out["continuous"] = await continuous(env, ns, n)
    out["cleanup"] = await delete_namespace(env.admin, ns, env.deadline(n))
    return out


async def fixed_cost(env: Env) -> dict[str, Any]:
    """One `reconcile --once` on an empty namespace: interpreter, imports, connection, lists."""
    ns = "bench-empty"
    await fresh_namespace(env.admin, ns, env.deadline(0))
    step = await reconcile_once(env, ns, "ours-empty", 0)
    await delete_namespace(env.admin, ns, env.deadline(0))
    return step.to_json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def controller_metrics(client: httpx.AsyncClient) -> dict[str, float]:
    """The continuous reconciler's own counters (for cross-checks, not for the figures)."""
    text = (await client.get("/metrics")).text
    names = (
        "jupyternetes_reconciles_total",
        "jupyternetes_queue_depth",
        "jupyternetes_applies_total",
        "jupyternetes_status_writes_total",
        "jupyternetes_pruned_total",
    )
    found = promtext.samples(text, names)
    flat: dict[str, float] = {}
    for name, series in found.items():
        for labels, value in series.items():
            suffix = ",".join(f"{k}={v}" for k, v in labels)
            flat[f"{name}{{{suffix}}}" if suffix else name] = value
    return flat


def _total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


async def continuous(env: Env, ns: str, n: int) -> dict[str, Any]:
    """Start the controller with N instances present; time new servers and garbage collection."""
    port = free_port()
    before = await env.scraper.snapshot()
    started = time.monotonic()
    proc = Background(
        env.reconcile_argv(ns, "--health-port", str(port)),
        env=child_env(),
        logs=env.logs,
        name=f"ours-continuous-{n}",
    )
    out: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as health:
            out["startup"] = await _startup(env, proc, health, n, started, before)
            async with Tracker(env.admin, ns, env.deadline(n)) as seen:
                out["new_instances"] = await _new_instances(env, proc, seen, ns, n)
                out["gc"] = await _collect(env, proc, seen, health, ns, n)
            out["controller_metrics"] = await controller_metrics(health)
    finally:
        code = await asyncio.to_thread(proc.stop)
        out["exit_code"] = code
    if code != 0:
        raise RuntimeError(f"continuous reconciler exited {code}:\n{proc.tail()}")
    return out


async def _startup(
    env: Env,
    proc: Background,
    health: httpx.AsyncClient,
    n: int,
    started: float,
    before: Snapshot,
) -> dict[str, Any]:
    """Until /readyz, then until the initial pass over all N instances has drained."""

    async def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"the reconciler exited:\n{proc.tail()}")
        return (await health.get("/readyz")).status_code == 200

    await wait_for(ready, timeout=env.deadline(n), interval=0.05, message="/readyz")
    ready_s = time.monotonic() - started
    ready_cpu = proc.cpu_s()

    async def drained() -> bool:
        metrics = await controller_metrics(health)
        return (
            _total(metrics, "jupyternetes_reconciles_total") >= n
            and metrics.get("jupyternetes_queue_depth", 1) == 0
        )

    await wait_for(drained, timeout=env.deadline(n), interval=0.1, message="initial pass")
    drained_s = time.monotonic() - started
    drained_cpu = proc.cpu_s()
    requests, context = window(before, await env.scraper.snapshot())
    memory = proc.memory_kib()
    log.info(
        "continuous start: ready %.2fs, drained %.2fs, %d requests (%d writes), RSS %d MiB",
        ready_s,
        drained_s,
        requests.total,
        requests.writes,
        memory["rss"] // 1024,
    )
    return {
        "ready_s": ready_s,
        "drained_s": drained_s,
        "cpu_to_ready_s": ready_cpu,
        "cpu_initial_pass_s": drained_cpu - ready_cpu,
        "requests": requests.to_json(),
        "all_clients": context,
        "rss_kib": memory["rss"],
    }


async def _new_instances(
    env: Env, proc: Background, seen: Tracker, ns: str, n: int
) -> dict[str, Any]:
    """Create instances one at a time, each once the previous one's pod exists."""
    before = await env.scraper.snapshot()
    cpu_before = proc.cpu_s()
    created: dict[str, float] = {}
    for index in range(n, n + env.new_instances):
        name = workload.instance_name(index)
        created[name] = time.monotonic()
        await workload.put(env.admin, workload.instance(ns, index), workload.HUB_MANAGER)
        await wait_for(
            lambda name=name: name in seen.pod_seen,
            timeout=60,
            interval=0.005,
            message=f"pod of {name}",
        )
    await wait_for(
        lambda: all(k in seen.address_seen and k in seen.running_seen for k in created),
        timeout=env.deadline(env.new_instances),
        interval=0.05,
        message="podAddress of every new instance",
    )
    # The statuses go on (Progressing -> Converged) after the address shows: count all of it.
    await wait_for(
        lambda: seen.all_converged(n + env.new_instances),
        timeout=env.deadline(n),
        interval=0.1,
        message="every instance Ready and no longer Progressing",
    )
    requests, context = window(before, await env.scraper.snapshot())
    memory = proc.memory_kib()
    to_pod = [seen.pod_seen[k] - t for k, t in created.items()]
    to_address = [seen.address_seen[k] - t for k, t in created.items()]
    # The reconciler's own share of the address latency: from the pod running (scheduler,
    # volume binding and the node are done) to the status showing its address.
    running_to_address = [seen.address_seen[k] - seen.running_seen[k] for k in created]
    log.info(
        "continuous: create->pod p50 %.3fs p99 %.3fs; create->podAddress p50 %.3fs p99 %.3fs",
        stats.percentile(to_pod, 50),
        stats.percentile(to_pod, 99),
        stats.percentile(to_address, 50),
        stats.percentile(to_address, 99),
    )
    return {
        "count": len(created),
        "cpu_s": proc.cpu_s() - cpu_before,
        "to_pod_s": stats.latency_summary(to_pod),
        "to_address_s": stats.latency_summary(to_address),
        "running_to_address_s": stats.latency_summary(running_to_address),
        "requests": requests.to_json(),
        "all_clients": context,
        "rss_kib": memory["rss"],
        "hwm_kib": memory["hwm"],
    }


async def _collect(
    env: Env, proc: Background, seen: Tracker, health: httpx.AsyncClient, ns: str, n: int
) -> dict[str, Any]:
    """Delete N/2 of the original instances; time until their pods are gone.

    The pods have ownerReferences, so Kubernetes' garbage collector deletes them too; the
    reconciler's own deletes (``pruned``) race it, which is why both are reported.
    """
    victims = {workload.instance_name(i) for i in range(n // 2)}
    pods_before = seen.pods_of(victims)
    pruned_before = _total(await controller_metrics(health), "jupyternetes_pruned_total")
    before = await env.scraper.snapshot()
    cpu_before = proc.cpu_s()
    started = time.monotonic()
    gate = asyncio.Semaphore(32)

    async def delete(name: str) -> None:
        async with gate:
            await env.admin.delete(INSTANCE, ns, name)

    await asyncio.gather(*(delete(v) for v in sorted(victims)))
    deletes_s = time.monotonic() - started
    await _wait_count(lambda: seen.pods_of(victims), env.deadline(n), "their pods gone")
    gone_s = time.monotonic() - started
    requests, context = window(before, await env.scraper.snapshot())
    pruned = _total(await controller_metrics(health), "jupyternetes_pruned_total") - pruned_before
    log.info(
        "gc: %d instances deleted in %.2fs, pods gone after %.2fs", len(victims), deletes_s, gone_s
    )
    return {
        "instances_deleted": len(victims),
        "pods_before": pods_before,
        "deletes_issued_s": deletes_s,
        "pods_gone_s": gone_s,
        "cpu_s": proc.cpu_s() - cpu_before,
        "pvcs_kept": seen.pvcs_of(victims),
        "pods_deleted_by_reconciler": int(pruned),
        "requests": requests.to_json(),
        "all_clients": context,
    }


async def _wait_count(count: Callable[[], int], timeout: float, what: str) -> None:
    await wait_for(lambda: count() == 0, timeout=timeout, interval=0.05, message=what)
