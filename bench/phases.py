"""The measured phases, one function per contender and size.

Each contender works in its own fresh namespace (named with the run's id, so a leftover of an
earlier run never has to be waited for), deleted in the background when it is done. Servers are
parked (see bench.workload): nothing waits for a scheduler, a node or a volume. Every wait is a
condition with a deadline that grows with N; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import workload
from bench.attribution import Requests, Snapshot, all_clients, apiserver_cpu, subject_requests
from bench.audit import AuditLog, wasted
from bench.cluster import Scraper, begin_namespace_deletion, fresh_namespace
from bench.procs import ProcessRun, child_env, run_measured
from bench.tracker import Tracker
from jupyternetes_ssa.kube import Kube

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
    """What every phase needs: the admin client (setup and observer), the subject's
    kubeconfig (the contenders), the hub's, the tools, where logs go, and the knobs."""

    admin: Kube
    admin_kubeconfig: Path
    subject_kubeconfig: Path
    hub_kubeconfig: Path
    kubectl: Path
    scraper: Scraper
    logs: Path
    audit: AuditLog = field(default_factory=lambda: AuditLog(None))
    run_id: str = "0"
    concurrency: int = 8
    gc_concurrency: int = 20  # deletes at once: the reconciler's GC and the delete loop alike
    new_instances: int = 100
    burst: int = 500
    baseline_max: int = 1000
    seconds_per_object: float = 0.5

    def deadline(self, n: int) -> float:
        """An upper bound for anything that scales with N on a slow, shared machine."""
        return 120.0 + self.seconds_per_object * n

    def namespace(self, contender: str, n: int) -> str:
        return f"bench-{contender}-{n}-{self.run_id}"

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
            "--gc-concurrency",
            str(self.gc_concurrency),
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
    step.extra["apiserver_cpu_s"] = apiserver_cpu(before, after)
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


# --- baseline (a): kubectl apply --server-side ------------------------------------------------
async def bench_kubectl(env: Env, n: int) -> dict[str, Any]:
    """Apply all 2N objects, re-apply them unchanged (idle), apply the image change."""
    ns = env.namespace("kubectl", n)
    await fresh_namespace(env.admin, ns, env.deadline(n))
    manifests = workload.write_multidoc(
        workload.rendered(ns, range(n)), env.logs / f"kubectl-{n}.yaml"
    )
    changed = workload.write_multidoc(
        workload.rendered(ns, range(n), workload.CHANGED_IMAGE),
        env.logs / f"kubectl-{n}-changed.yaml",
    )
    out: dict[str, Any] = {}

    async def apply(name: str, path: Path) -> dict[str, Any]:
        argv = env.kubectl_argv(path, env.logs / f"kubectl-cache-{name}")
        return (await measured_process(env, argv, name, env.deadline(n))).to_json()

    out["apply"] = await apply(f"kubectl-apply-{n}", manifests)
    out["idle"] = await apply(f"kubectl-idle-{n}", manifests)
    out["template_change"] = await apply(f"kubectl-change-{n}", changed)
    await begin_namespace_deletion(env.admin, ns)
    return out


# --- baseline (b): a direct create (and delete) loop ------------------------------------------
def loop_argv(
    env: Env, objects: Path, *, hub: bool = False, delete: bool = False, concurrency: int = 0
) -> list[str]:
    """bench.create_loop as the subject (a baseline), or as the hub applying instances."""
    return [
        sys.executable,
        "-m",
        "bench.create_loop",
        "--kubeconfig",
        str(env.hub_kubeconfig if hub else env.subject_kubeconfig),
        "--objects",
        str(objects),
        "--concurrency",
        str(concurrency or env.concurrency),
        *(["--delete"] if delete else []),
        *(["--apply", workload.HUB_MANAGER] if hub else []),
    ]


async def hub_apply(
    env: Env, ns: str, indices: range, name: str, concurrency: int = 32
) -> dict[str, Any]:
    """The hub creates these parked instances, ``concurrency`` at a time, in its own process;
    returns what the loop reported (``started``, ``elapsed_s``)."""
    groups = [[workload.instance(ns, i)] for i in indices]
    objects = workload.write_groups(groups, env.logs / f"{name}.json")
    argv = loop_argv(env, objects, hub=True, concurrency=concurrency)
    run = await asyncio.to_thread(
        run_measured,
        argv,
        env=child_env(),
        logs=env.logs,
        name=name,
        timeout=env.deadline(len(indices)),
    )
    if run.exit_code != 0:
        raise RuntimeError(f"{name} exited {run.exit_code}:\n{run.tail()}")
    return json.loads(run.output())


async def loop_process(
    env: Env, name: str, groups: list[list[dict]], n: int, delete: bool = False
) -> dict[str, Any]:
    """One measured run of bench.create_loop over ``groups``; what it reported is kept."""
    objects = workload.write_groups(groups, env.logs / f"{name}.json")
    argv = loop_argv(env, objects, delete=delete, concurrency=env.gc_concurrency if delete else 0)
    mark = env.audit.mark()
    step = await measured_process(env, argv, name, env.deadline(n))
    step.extra.update(json.loads((env.logs / f"{name}.out").read_text()))
    if delete:
        answers = env.audit.answers(mark)
        step.extra["delete_answers"] = answers
        step.extra["wasted_deletes"] = wasted(answers)
    return step.to_json()


async def bench_create_loop(env: Env, n: int) -> dict[str, Any]:
    """Create N servers (at N up to --baseline-max), delete N/2 of their pods, create a burst."""
    ns = env.namespace("loop", n)
    await fresh_namespace(env.admin, ns, env.deadline(n))
    out: dict[str, Any] = {}
    if n <= env.baseline_max:
        out["create"] = await loop_process(
            env, f"loop-create-{n}", workload.rendered(ns, range(n)), n
        )
    victims = workload.pods_only(workload.rendered(ns, range(n // 2)))
    if "create" not in out:  # only what the delete loop needs, made by the admin, unmeasured
        await admin_create(env, victims)
    # Ours is watched by the bench's Tracker while it deletes and bursts (that is how the bench
    # sees it finish); the loops are watched the same way, so both share the 2 cores with it.
    async with Tracker(env.admin, ns, env.deadline(n)):
        out["delete"] = await loop_process(env, f"loop-delete-{n}", victims, n // 2, delete=True)
        burst = workload.rendered(ns, range(n, n + env.burst))
        out["burst"] = await loop_process(env, f"loop-burst-{n}", burst, env.burst)
    await begin_namespace_deletion(env.admin, ns)
    return out


async def admin_create(env: Env, groups: list[list[dict]], concurrency: int = 32) -> None:
    """Objects a phase needs but does not measure, created as fast as the admin can."""
    gate = asyncio.Semaphore(concurrency)

    async def one(group: list[dict]) -> None:
        async with gate:
            for obj in group:
                await env.admin.create(obj, field_manager=None)

    await asyncio.gather(*(one(g) for g in groups))


# --- jupyternetes-ssa, once mode ---------------------------------------------------------------
async def bench_ours_once(env: Env, ns: str, n: int) -> dict[str, Any]:
    """The hub creates N parked instances; converge, idle, and (at N up to --baseline-max)
    template change and the pass after it."""
    await workload.put(env.admin, workload.template(ns))
    await workload.put(env.admin, workload.template(ns, parked=False))
    hub = await hub_apply(env, ns, range(n), f"hub-create-{n}")
    out: dict[str, Any] = {"hub_create_s": hub["elapsed_s"]}
    out["converge"] = (await reconcile_once(env, ns, f"ours-converge-{n}", n)).to_json()
    # Nothing changed since (parked pods stay Pending): must write nothing.
    out["idle"] = (await reconcile_once(env, ns, f"ours-idle-{n}", n)).to_json()
    if n > env.baseline_max:  # no kubectl to compare with, and no target: save the two passes
        return out
    await workload.put(env.admin, workload.template(ns, workload.CHANGED_IMAGE))
    out["template_change"] = (await reconcile_once(env, ns, f"ours-change-{n}", n)).to_json()
    # Nothing changed since: must be as quiet as the idle pass (a status that flips between
    # consecutive passes would show here as N writes).
    out["after_change"] = (await reconcile_once(env, ns, f"ours-after-change-{n}", n)).to_json()
    return out


async def fixed_cost(env: Env) -> dict[str, Any]:
    """One `reconcile --once` on an empty namespace: interpreter, imports, connection, lists."""
    ns = env.namespace("empty", 0)
    await fresh_namespace(env.admin, ns, env.deadline(0))
    step = await reconcile_once(env, ns, "ours-empty", 0)
    await begin_namespace_deletion(env.admin, ns)
    return step.to_json()
