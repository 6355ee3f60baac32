"""Issue 16's targets, each read off one run's results with the measured figure and PASS/FAIL.

Pure, like bench.report. A target names the N it is for; a run without that N judges the figure
at its largest N instead and says so, so a quick `--sizes 100` run still shows every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.attribution import SHORT
from bench.stats import ratio
from bench.table import MISSING, dig, fmt_mib, fmt_ratio, fmt_seconds, markdown_table

Result = Mapping[str, Any]
PAGE = 100  # a kind listed in pages of at least this many objects counts as "one paginated list"
OBJECT_KINDS = ("jupyternotebookinstances", "pods", "persistentvolumeclaims")


@dataclass(frozen=True)
class Verdict:
    measured: str
    ok: bool | None  # None: not measured in this run


@dataclass(frozen=True)
class Target:
    figure: str
    n: int
    target: str
    judge: Callable[[Result, int], Verdict]


def _none(why: str = MISSING) -> Verdict:
    return Verdict(why, None)


def _per(step: Any, count: Any) -> float | None:
    total = dig(step, "requests", "total")
    return total / count if total is not None and count else None


def converge_requests(r: Result, n: int) -> Verdict:
    """The target counts a server's own requests ("its 2 applies + 1 status write"): the
    writes per server, and reads that do not grow per server (a paginated list per kind, as
    for the idle pass; kubectl's discovery reads are not counted against it either)."""
    req = dig(r, "ours", "converge", "requests")
    if not req or not n:
        return _none()
    by_verb = req.get("by_verb", {})
    per_object_reads = sum(by_verb.get("get", {}).get(kind, 0) for kind in OBJECT_KINDS)
    writes = req["writes"] / n
    reads = req["total"] - req["writes"]
    text = (
        f"{writes:.2f} writes per server ({req['total'] / n:.3f} with the pass's {reads} reads: "
        f"lists, and {per_object_reads} GETs of objects)"
    )
    return Verdict(text, writes <= 3 and per_object_reads == 0)


def _ratio_of(r: Result, a: tuple[str, ...], b: tuple[str, ...], limit: float) -> Verdict:
    value = ratio(dig(r, *a), dig(r, *b))
    if value is None:
        return _none()
    return Verdict(
        f"{fmt_ratio(value)} ({fmt_seconds(dig(r, *a))} vs {fmt_seconds(dig(r, *b))})",
        value <= limit,
    )


def converge_cpu(r: Result, n: int) -> Verdict:
    return _ratio_of(r, ("ours", "converge", "cpu_s"), ("kubectl", "apply", "cpu_s"), 1.5)


def converge_wall(r: Result, n: int) -> Verdict:
    return _ratio_of(r, ("ours", "converge", "wall_s"), ("kubectl", "apply", "wall_s"), 1.0)


def idle_pass(r: Result, n: int) -> Verdict:
    """0 writes; no GET of an object; each kind listed in pages of >= PAGE objects."""
    req = dig(r, "ours", "idle", "requests")
    if not req:
        return _none()
    by_verb = req.get("by_verb", {})
    lists = by_verb.get("list", {})
    object_gets = sum(by_verb.get("get", {}).get(kind, 0) for kind in OBJECT_KINDS)
    pages_ok = all(lists.get(kind, 0) <= math.ceil(n / PAGE) + 1 for kind in OBJECT_KINDS)
    listed = ", ".join(f"{SHORT.get(kind, kind)} {lists.get(kind, 0)}" for kind in OBJECT_KINDS)
    text = f"{req['writes']} writes; list pages {listed}; GETs of these {object_gets}"
    return Verdict(text, req["writes"] == 0 and object_gets == 0 and pages_ok)


def new_server_requests(r: Result, n: int) -> Verdict:
    step = dig(r, "ours", "continuous", "new_instances")
    count = dig(step, "count")
    per = _per(step, count)
    if per is None:
        return _none()
    status = dig(step, "requests", "by_verb", "patch", "jupyternotebookinstances/status") or 0
    return Verdict(f"{per:.2f} ({status / count:.2f} status writes)", per <= 4)


def startup(r: Result, n: int) -> Verdict:
    seconds = dig(r, "ours", "continuous", "startup", "drained_s")
    if seconds is None:
        return _none()
    return Verdict(fmt_seconds(seconds), seconds <= 60)


def pod_p99(r: Result, n: int) -> Verdict:
    p99 = dig(r, "ours", "continuous", "new_instances", "to_pod_s", "p99")
    if p99 is None:
        return _none()
    return Verdict(fmt_seconds(p99), p99 <= 0.25)


def burst(r: Result, n: int) -> Verdict:
    return _ratio_of(
        r,
        ("ours", "continuous", "burst", "to_all_pods_s"),
        ("create_loop", "burst", "elapsed_s"),
        1.5,
    )


def rss(r: Result, n: int) -> Verdict:
    kib = dig(r, "ours", "continuous", "new_instances", "hwm_kib")
    if kib is None:
        return _none()
    return Verdict(f"{fmt_mib(kib)} peak", kib <= 200 * 1024)


def orphan_gc(r: Result, n: int) -> Verdict:
    """Timed from the reconciler's readiness, as the delete loop is timed from its first request
    (both "a process that runs already"): the time to start and list is its own target. Timed
    until every orphan is deleted, as the delete loop until its last answer (a pod with a grace
    period lingers, terminating, after either)."""
    wall = _ratio_of(
        r, ("ours", "orphan_gc", "deleted_after_ready_s"), ("create_loop", "delete", "wall_s"), 1.2
    )
    if wall.ok is None:
        return wall
    waste = dig(r, "ours", "orphan_gc", "wasted_deletes")
    text = f"{wall.measured}; wasted deletes {'unknown (no audit log)' if waste is None else waste}"
    if waste is None:  # a verdict on the wall time alone would claim more than was measured
        return Verdict(text, False if not wall.ok else None)
    return Verdict(text, wall.ok and waste == 0)


def _share(shard: Any, single: Any, base: Any) -> tuple[float | None, float | None]:
    """shard / single, raw and above a process's fixed cost (what an empty namespace costs)."""
    raw = ratio(shard, single)
    if raw is None or base is None:
        return raw, None
    return raw, ratio(shard - base, single - base)


def shards(r: Result, n: int) -> Verdict:
    """Each shard's RSS and CPU against the single reconciler's at the same point (the end of
    its initial pass): about half of what the single one holds above a process's fixed cost."""
    found = dig(r, "ours", "shards")
    if not found:
        return _none()
    if "skipped" in found:
        return _none(found["skipped"])
    single = dig(r, "ours", "continuous", "startup") or {}
    fixed = r.get("fixed_cost") or {}
    parts, ok = [], True
    for shard in found.get("each", []):
        mem, mem_net = _share(shard.get("rss_kib"), single.get("rss_kib"), fixed.get("max_rss_kib"))
        cpu, cpu_net = _share(shard.get("cpu_s"), single.get("cpu_s"), fixed.get("cpu_s"))
        parts.append(
            f"{shard['shard']}: {fmt_mib(shard.get('rss_kib'))} ({fmt_ratio(mem)}, "
            f"{fmt_ratio(mem_net)} above fixed), CPU {fmt_seconds(shard.get('cpu_s'))} "
            f"({fmt_ratio(cpu)}, {fmt_ratio(cpu_net)} above fixed)"
        )
        nets = (mem_net, cpu_net)
        ok = ok and all(x is not None and x <= 0.6 for x in nets)
    return Verdict("; ".join(parts), ok)


TARGETS = (
    Target("converge from empty: requests per server", 1000, "<= 3", converge_requests),
    Target("converge: CPU ours / kubectl", 1000, "<= 1.5x", converge_cpu),
    Target("converge: wall ours / kubectl", 1000, "<= 1.0x", converge_wall),
    Target("idle pass", 5000, "0 writes, one paginated list per kind", idle_pass),
    Target("continuous, a new server: requests", 5000, "<= 4", new_server_requests),
    Target("continuous start -> initial pass done", 5000, "<= 60 s", startup),
    Target("continuous, new instance -> pod exists p99", 5000, "<= 250 ms", pod_p99),
    Target("burst of 500 -> all pods exist, ours / create loop", 5000, "<= 1.5x", burst),
    Target("reconciler RSS, continuous", 5000, "<= 200 MiB", rss),
    Target("GC of N/2 orphans, ours / delete loop", 5000, "<= 1.2x, 0 wasted", orphan_gc),
    Target(
        "2 shards: each one's RSS and CPU / single's",
        5000,
        "about 0.5x above a process's fixed cost (<= 0.6x)",
        shards,
    ),
)


def targets_table(sizes: Mapping[str, Result], fixed_cost: Result | None = None) -> str:
    """One row per target: the N judged, the figure, the target, PASS/FAIL (or why not).
    ``fixed_cost``: one `reconcile --once` on an empty namespace (what any process costs)."""
    measured = sorted(int(n) for n in sizes)
    rows = []
    for t in TARGETS:
        n = t.n if t.n in measured else (measured[-1] if measured else t.n)
        found = sizes.get(str(n))
        verdict = t.judge({**found, "fixed_cost": fixed_cost}, n) if found else _none()
        status = {True: "PASS", False: "FAIL", None: MISSING}[verdict.ok]
        if n != t.n and verdict.ok is not None:
            status += f" (at N = {n:,}, not {t.n:,})"
        rows.append([t.figure, f"{n:,}", verdict.measured, t.target, status])
    return markdown_table(["target (issue 16)", "N", "measured", "target", "verdict"], rows)
