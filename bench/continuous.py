"""Continuous mode (`reconcile` as a long-running process) with N parked instances present.

Three reconciler runs, one after the other, on the namespace once mode left converged:

1. shards: two reconcilers, ``--shard 0/2`` and ``--shard 1/2``, until both have drained their
   initial pass (skipped, with a note, while the CLI has no ``--shard``);
2. one reconciler: start-up until its initial pass has drained; new servers one by one (the seed
   template, so their pods really run and the statuses follow them); a burst of parked instances
   created at once; the burst's instances deleted again (their pods are Kubernetes' garbage
   collector's to delete: they carry an ownerReference);
3. orphan GC: N/2 of the original instances are made orphans while no reconciler runs (their
   pods' ownerReferences removed, then the instances deleted), so only the reconciler can collect
   them; then a reconciler starts and the time until every orphan pod is gone is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from bench import promtext, stats, workload
from bench.attribution import apiserver_cpu
from bench.audit import wasted
from bench.phases import Env, hub_apply, window
from bench.procs import Background, child_env
from bench.tracker import Tracker
from jupyternetes_ssa.kube import POD
from jupyternetes_ssa.local_cluster import wait_for

log = logging.getLogger("bench")
STRIP_OWNERS = json.dumps([{"op": "remove", "path": "/metadata/ownerReferences"}])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric_total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


class Reconciler:
    """``async with Reconciler(env, ns, name, *flags) as r:`` one continuous reconciler process
    with its health port; stopped (SIGTERM) on exit, and a non-zero exit is an error."""

    def __init__(self, env: Env, ns: str, name: str, *extra: str):
        self.port = free_port()
        self.argv = env.reconcile_argv(ns, "--health-port", str(self.port), *extra)
        self.env, self.name = env, name
        self.started = 0.0

    async def __aenter__(self) -> Reconciler:
        self.started = time.monotonic()
        self.proc = Background(self.argv, env=child_env(), logs=self.env.logs, name=self.name)
        self.health = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        return self

    async def __aexit__(self, exc_type: object, *_: object) -> None:
        await self.health.aclose()
        code = await asyncio.to_thread(self.proc.stop)
        if code != 0 and exc_type is None:
            raise RuntimeError(f"{self.name} exited {code}:\n{self.proc.tail()}")

    async def metrics(self) -> dict[str, float]:
        """The reconciler's own counters (for conditions and cross-checks, not for figures)."""
        text = (await self.health.get("/metrics")).text
        names = (
            "jupyternetes_reconciles_total",
            "jupyternetes_queue_depth",
            "jupyternetes_instances",
            "jupyternetes_applies_total",
            "jupyternetes_status_writes_total",
            "jupyternetes_pruned_total",
        )
        flat: dict[str, float] = {}
        for name, series in promtext.samples(text, names).items():
            for labels, value in series.items():
                suffix = ",".join(f"{k}={v}" for k, v in labels)
                flat[f"{name}{{{suffix}}}" if suffix else name] = value
        return flat

    async def wait_ready(self, timeout: float) -> float:
        """Seconds from start to /readyz."""

        async def ready() -> bool:
            if not self.proc.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.proc.tail()}")
            try:
                return (await self.health.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False  # not listening yet

        await wait_for(ready, timeout=timeout, interval=0.05, message=f"{self.name} /readyz")
        return time.monotonic() - self.started

    async def drained(self) -> tuple[float, float]:
        """(reconciles so far, queue depth)."""
        metrics = await self.metrics()
        return (
            metric_total(metrics, "jupyternetes_reconciles_total"),
            metrics.get("jupyternetes_queue_depth", 1.0),
        )

    def sample(self) -> dict[str, Any]:
        memory = self.proc.memory_kib()
        return {"cpu_s": self.proc.cpu_s(), "rss_kib": memory["rss"], "hwm_kib": memory["hwm"]}


async def wait_drained(reconcilers: list[Reconciler], count: int, timeout: float) -> None:
    """Until the reconcilers together have reconciled ``count`` instances and none has a queue."""

    async def done() -> bool:
        states = [await r.drained() for r in reconcilers]
        return sum(s[0] for s in states) >= count and all(s[1] == 0 for s in states)

    await wait_for(done, timeout=timeout, interval=0.1, message="the initial pass drained")


async def bench_ours_continuous(env: Env, ns: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"shards": await shards(env, ns, n)}
    out["continuous"] = await single(env, ns, n)
    out["orphan_gc"] = await orphan_gc(env, ns, n)
    return out


# --- 1. shards ----------------------------------------------------------------------------------
@functools.cache
def shard_support(python: str) -> bool:
    """Whether this build's CLI knows ``reconcile --shard`` (another branch adds it)."""
    argv = [python, "-m", "jupyternetes_ssa", "reconcile", "--help"]
    found = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=120)
    return "--shard" in found.stdout


async def shards(env: Env, ns: str, n: int, count: int = 2) -> dict[str, Any]:
    """``count`` reconcilers splitting the instances; each one's start-up, CPU and memory."""
    if not await asyncio.to_thread(shard_support, env.reconcile_argv(ns)[0]):
        note = "skipped: `jupyternetes-ssa reconcile` has no --shard option in this build"
        log.warning("N=%d shards: %s", n, note)
        return {"skipped": note}
    runs = [
        Reconciler(env, ns, f"ours-shard-{i}of{count}-{n}", "--shard", f"{i}/{count}")
        for i in range(count)
    ]
    before = await env.scraper.snapshot()
    async with contextlib.AsyncExitStack() as stack:
        for r in runs:
            await stack.enter_async_context(r)
        ready = [await r.wait_ready(env.deadline(n)) for r in runs]
        await wait_drained(runs, n, env.deadline(n))
        drained_s = time.monotonic() - min(r.started for r in runs)
        samples = [r.sample() for r in runs]
        metrics = [await r.metrics() for r in runs]
    requests, _ = window(before, await env.scraper.snapshot())
    each = [
        {
            "shard": f"{i}/{count}",
            "ready_s": ready[i],
            "reconciles": metric_total(metrics[i], "jupyternetes_reconciles_total"),
            **samples[i],
        }
        for i in range(count)
    ]
    log.info(
        "shards: drained %.2fs; RSS %s MiB; CPU %s s",
        drained_s,
        [s["rss_kib"] // 1024 for s in each],
        [round(s["cpu_s"], 1) for s in each],
    )
    return {"count": count, "drained_s": drained_s, "each": each, "requests": requests.to_json()}


# --- 2. one reconciler --------------------------------------------------------------------------
async def single(env: Env, ns: str, n: int) -> dict[str, Any]:
    before = await env.scraper.snapshot()
    out: dict[str, Any] = {}
    async with Reconciler(env, ns, f"ours-continuous-{n}") as rec:
        out["startup"] = await _startup(env, rec, n, before)
        async with Tracker(env.admin, ns, env.deadline(n)) as seen:
            out["new_instances"] = await _new_instances(env, rec, seen, ns, n)
            first = n + env.new_instances
            burst = range(first, first + env.burst)
            out["burst"] = await _burst(env, rec, seen, ns, burst)
            out["instance_gc"] = await _instance_gc(env, rec, seen, ns, burst)
        out["controller_metrics"] = await rec.metrics()
        out["end"] = rec.sample()
    return out


async def _startup(env: Env, rec: Reconciler, n: int, before: Any) -> dict[str, Any]:
    """Until /readyz, then until the initial pass over all N instances has drained."""
    ready_s = await rec.wait_ready(env.deadline(n))
    ready_cpu = rec.proc.cpu_s()
    await wait_drained([rec], n, env.deadline(n))
    drained_s = time.monotonic() - rec.started
    sample = rec.sample()
    requests, context = window(before, await env.scraper.snapshot())
    log.info(
        "continuous start: ready %.2fs, drained %.2fs, %d requests (%d writes), RSS %d MiB",
        ready_s,
        drained_s,
        requests.total,
        requests.writes,
        sample["rss_kib"] // 1024,
    )
    return {
        "ready_s": ready_s,
        "drained_s": drained_s,
        "cpu_to_ready_s": ready_cpu,
        "cpu_initial_pass_s": sample["cpu_s"] - ready_cpu,
        "cpu_s": sample["cpu_s"],
        "requests": requests.to_json(),
        "all_clients": context,
        "rss_kib": sample["rss_kib"],
        "hwm_kib": sample["hwm_kib"],
    }


async def _new_instances(
    env: Env, rec: Reconciler, seen: Tracker, ns: str, n: int
) -> dict[str, Any]:
    """Create instances of the seed template one at a time, each once the previous one's pod
    exists; then wait until every one of them has its address and is converged."""
    before = await env.scraper.snapshot()
    cpu_before = rec.proc.cpu_s()
    created: dict[str, float] = {}
    for index in range(n, n + env.new_instances):
        name = workload.instance_name(index)
        created[name] = time.monotonic()
        doc = workload.instance(ns, index, workload.TEMPLATE_NAME)
        await workload.put(env.admin, doc, workload.HUB_MANAGER)
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
        lambda: seen.converged(created),
        timeout=env.deadline(env.new_instances),
        interval=0.1,
        message="every new instance Ready and no longer Progressing",
    )
    requests, context = window(before, await env.scraper.snapshot())
    sample = rec.sample()
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
        "cpu_s": sample["cpu_s"] - cpu_before,
        "to_pod_s": stats.latency_summary(to_pod),
        "to_address_s": stats.latency_summary(to_address),
        "running_to_address_s": stats.latency_summary(running_to_address),
        "requests": requests.to_json(),
        "all_clients": context,
        "rss_kib": sample["rss_kib"],
        "hwm_kib": sample["hwm_kib"],
    }


async def _burst(
    env: Env, rec: Reconciler, seen: Tracker, ns: str, indices: range
) -> dict[str, Any]:
    """Parked instances created all at once (100 at a time), as a hub's concurrent spawns: from
    the hub's first request until every pod exists, then until every instance has a status (the
    reconciler's requests counted over both)."""
    names = {workload.instance_name(i) for i in indices}
    before = await env.scraper.snapshot()
    cpu_before = rec.proc.cpu_s()
    hub = await hub_apply(env, ns, indices, f"hub-burst-{len(names)}", concurrency=100)
    started = hub["started"]
    created_s = hub["elapsed_s"]
    await wait_for(
        lambda: names <= seen.pod_seen.keys(),
        timeout=env.deadline(len(names)),
        interval=0.02,
        message="the pods of the burst",
    )
    at_pods = await env.scraper.snapshot()
    await wait_for(
        lambda: seen.with_status(names) == len(names),
        timeout=env.deadline(len(names)),
        interval=0.05,
        message="the statuses of the burst",
    )
    requests, context = window(before, await env.scraper.snapshot())
    last_pod = max(seen.pod_seen[k] for k in names) - started
    log.info(
        "burst of %d: created %.2fs, all pods %.2fs, statuses %.2fs",
        len(names),
        created_s,
        last_pod,
        time.monotonic() - started,
    )
    return {
        "count": len(names),
        "hub_create_s": created_s,
        "to_all_pods_s": last_pod,
        "to_all_statuses_s": time.monotonic() - started,
        "apiserver_cpu_to_pods_s": apiserver_cpu(before, at_pods),
        "cpu_s": rec.proc.cpu_s() - cpu_before,
        "requests": requests.to_json(),
        "all_clients": context,
        "hwm_kib": rec.sample()["hwm_kib"],
    }


async def _instance_gc(
    env: Env, rec: Reconciler, seen: Tracker, ns: str, indices: range
) -> dict[str, Any]:
    """The hub deletes the burst's instances; time until their pods are gone.

    The pods carry an ownerReference to their instance, so Kubernetes' garbage collector deletes
    them (at the controller manager's request rate); the reconciler leaves owned objects to it.
    Any delete the reconciler sends anyway is counted, and so are the wasted ones.
    """
    names = {workload.instance_name(i) for i in indices}
    pruned_before = metric_total(await rec.metrics(), "jupyternetes_pruned_total")
    mark = env.audit.mark()
    before = await env.scraper.snapshot()
    started = time.monotonic()
    await workload.delete_instances(env.admin, ns, indices)
    await wait_for(
        lambda: seen.pods_of(names) == 0,
        timeout=env.deadline(len(names)),
        interval=0.05,
        message="the burst's pods gone",
    )
    gone_s = time.monotonic() - started
    requests, _ = window(before, await env.scraper.snapshot())
    answers = env.audit.answers(mark)
    pruned = metric_total(await rec.metrics(), "jupyternetes_pruned_total") - pruned_before
    log.info("instance GC of %d: pods gone %.2fs", len(names), gone_s)
    return {
        "instances_deleted": len(names),
        "pods_gone_s": gone_s,
        "requests": requests.to_json(),
        "pruned_by_reconciler": int(pruned),
        "delete_answers": answers,
        "wasted_deletes": wasted(answers),
    }


# --- 3. orphans ---------------------------------------------------------------------------------
async def make_orphans(env: Env, ns: str, indices: Iterable[int]) -> None:
    """With no reconciler running: remove the pods' ownerReferences (so Kubernetes' garbage
    collector has no claim on them), then delete their instances."""
    gate = asyncio.Semaphore(32)

    async def strip(index: int) -> None:
        name = f"{workload.instance_name(index)}-notebook"
        async with gate:
            await env.admin.request(
                "PATCH",
                POD,
                ns,
                POD.url(name),
                content=STRIP_OWNERS,
                headers={"Content-Type": "application/json-patch+json"},
            )

    indices = list(indices)
    await asyncio.gather(*(strip(i) for i in indices))
    await workload.delete_instances(env.admin, ns, indices)


async def orphan_gc(env: Env, ns: str, n: int) -> dict[str, Any]:
    """N/2 orphan pods, only the reconciler to delete them: from its start until each is deleted
    (has its deletionTimestamp, as each of the delete loop's answers says), then until gone."""
    victims = range(n // 2)
    names = {workload.instance_name(i) for i in victims}
    started = time.monotonic()
    await make_orphans(env, ns, victims)
    setup_s = time.monotonic() - started
    async with Tracker(env.admin, ns, env.deadline(n)) as seen:
        orphans = seen.pods_of(names)
        mark = env.audit.mark()
        before = await env.scraper.snapshot()
        async with Reconciler(env, ns, f"ours-orphan-gc-{n}") as rec:
            ready_s = await rec.wait_ready(env.deadline(n))

            async def until(count: Callable[[set[str]], int], what: str) -> float:
                """Seconds from the reconciler's start until no orphan pod is counted."""
                await wait_for(
                    lambda: count(names) == 0, timeout=env.deadline(n), interval=0.05, message=what
                )
                return time.monotonic() - rec.started

            deleted_s = await until(seen.undeleted_pods_of, "every orphan pod deleted")
            gone_s = await until(seen.pods_of, "the orphan pods gone")
            pruned = metric_total(await rec.metrics(), "jupyternetes_pruned_total")
            sample = rec.sample()
        requests, context = window(before, await env.scraper.snapshot())
        pvcs_kept = seen.pvcs_of(names)
    answers = env.audit.answers(mark)
    log.info(
        "orphan GC of %d pods: ready %.2fs, deleted %.2fs, gone %.2fs, %d deletes (%s wasted)",
        orphans,
        ready_s,
        deleted_s,
        gone_s,
        requests.of("delete"),
        wasted(answers),
    )
    return {
        "orphans": orphans,
        "setup_s": setup_s,
        "ready_s": ready_s,
        "deleted_s": deleted_s,
        "deleted_after_ready_s": deleted_s - ready_s,
        "pods_gone_s": gone_s,
        "pruned_by_reconciler": int(pruned),
        "requests": requests.to_json(),
        "all_clients": context,
        "delete_answers": answers,
        "wasted_deletes": wasted(answers),
        "pvcs_kept": pvcs_kept,
        **sample,
    }
