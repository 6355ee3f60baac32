"""Turn a results document (what run.py writes as JSON) into the Markdown tables.

Pure: the same function renders a fresh run and an old JSON file (``bench.run --render``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bench.stats import ratio
from bench.table import (
    MISSING,
    dig,
    fmt_breakdown,
    fmt_count,
    fmt_mib,
    fmt_ratio,
    fmt_requests,
    fmt_seconds,
    markdown_table,
)
from bench.targets import targets_table

Result = Mapping[str, Any]


def _requests_total(step: Any) -> int | None:
    return dig(step, "requests", "total")


def _ratio_cell(seconds: Any, count: Any) -> str:
    """Seconds per item, e.g. CPU per new server."""
    return fmt_seconds(seconds / count) if seconds is not None and count else MISSING


def _per_instance(step: Any, count: Any) -> str:
    total = _requests_total(step)
    if total is None or not count:
        return MISSING
    return f"{total / count:.1f}"


Row = tuple[str, Callable[[Result], str]]


def _rows() -> list[Row]:
    """(label, cell function of one size's results), in reading order."""
    ours, kubectl, loop = "ours", "kubectl", "create_loop"

    def wall(*path: str) -> Callable[[Result], str]:
        return lambda r: fmt_seconds(dig(r, *path, "wall_s"))

    def reqs(*path: str) -> Callable[[Result], str]:
        return lambda r: fmt_requests(dig(r, *path, "requests"))

    def cpu(*path: str) -> Callable[[Result], str]:
        return lambda r: fmt_seconds(dig(r, *path, "cpu_s"))

    def cpu_ratio(a: tuple[str, ...], b: tuple[str, ...]) -> Callable[[Result], str]:
        return lambda r: fmt_ratio(ratio(dig(r, *a, "cpu_s"), dig(r, *b, "cpu_s")))

    def rss(*path: str) -> Callable[[Result], str]:
        return lambda r: fmt_mib(dig(r, *path, "max_rss_kib"))

    def wall_ratio(a: tuple[str, ...], b: tuple[str, ...]) -> Callable[[Result], str]:
        return lambda r: fmt_ratio(ratio(dig(r, *a, "wall_s"), dig(r, *b, "wall_s")))

    def req_ratio(a: tuple[str, ...], b: tuple[str, ...]) -> Callable[[Result], str]:
        return lambda r: fmt_ratio(ratio(_requests_total(dig(r, *a)), _requests_total(dig(r, *b))))

    def latency(key: str) -> Callable[[Result], str]:
        def cell(r: Result) -> str:
            s = dig(r, ours, "continuous", "new_instances", key)
            if not s or not s.get("n"):
                return MISSING
            return " / ".join(fmt_seconds(s[p]) for p in ("p50", "p95", "p99"))

        return cell

    conv, k_apply, l_create = (ours, "converge"), (kubectl, "apply"), (loop, "create")
    idle, k_idle = (ours, "idle"), (kubectl, "idle")
    change, k_change = (ours, "template_change"), (kubectl, "template_change")
    cont = (ours, "continuous")
    return [
        ("**Converge from empty** (N PVCs + N pods)", lambda r: ""),
        ("ours `reconcile --once`: wall", wall(*conv)),
        ("ours: CPU (user + sys)", cpu(*conv)),
        ("ours: requests", reqs(*conv)),
        ("ours: peak RSS", rss(*conv)),
        ("`kubectl apply --server-side`: wall", wall(*k_apply)),
        ("kubectl: CPU", cpu(*k_apply)),
        ("kubectl: requests", reqs(*k_apply)),
        ("kubectl: peak RSS", rss(*k_apply)),
        ("create loop (POST each): wall", wall(*l_create)),
        ("create loop: CPU", cpu(*l_create)),
        ("create loop: requests", reqs(*l_create)),
        ("create loop: peak RSS", rss(*l_create)),
        ("wall ours ÷ kubectl", wall_ratio(conv, k_apply)),
        ("wall ours ÷ create loop", wall_ratio(conv, l_create)),
        ("CPU ours ÷ kubectl", cpu_ratio(conv, k_apply)),
        ("CPU ours ÷ create loop", cpu_ratio(conv, l_create)),
        ("requests ours ÷ kubectl", req_ratio(conv, k_apply)),
        ("requests ours ÷ create loop", req_ratio(conv, l_create)),
        ("**Idle pass** (nothing changed since the converge)", lambda r: ""),
        ("ours: wall", wall(*idle)),
        ("ours: CPU", cpu(*idle)),
        ("ours: requests", reqs(*idle)),
        ("ours: peak RSS", rss(*idle)),
        ("kubectl re-apply: wall", wall(*k_idle)),
        ("kubectl re-apply: CPU", cpu(*k_idle)),
        ("kubectl re-apply: requests", reqs(*k_idle)),
        ("wall ours ÷ kubectl", wall_ratio(idle, k_idle)),
        ("CPU ours ÷ kubectl", cpu_ratio(idle, k_idle)),
        ("requests ours ÷ kubectl", req_ratio(idle, k_idle)),
        ("**Template change** (container image, in place)", lambda r: ""),
        ("ours: wall", wall(*change)),
        ("ours: CPU", cpu(*change)),
        ("ours: requests", reqs(*change)),
        ("kubectl apply: wall", wall(*k_change)),
        ("kubectl apply: CPU", cpu(*k_change)),
        ("kubectl apply: requests", reqs(*k_change)),
        ("wall ours ÷ kubectl", wall_ratio(change, k_change)),
        ("CPU ours ÷ kubectl", cpu_ratio(change, k_change)),
        ("requests ours ÷ kubectl", req_ratio(change, k_change)),
        ("ours: the pass after it: wall", wall(ours, "after_change")),
        ("ours: the pass after it: requests", reqs(ours, "after_change")),
        ("**Continuous mode** (`reconcile`, N instances present)", lambda r: ""),
        ("start → /readyz", lambda r: fmt_seconds(dig(r, *cont, "startup", "ready_s"))),
        ("start → initial pass done", lambda r: fmt_seconds(dig(r, *cont, "startup", "drained_s"))),
        (
            "CPU of the initial pass (after /readyz)",
            lambda r: fmt_seconds(dig(r, *cont, "startup", "cpu_initial_pass_s")),
        ),
        ("startup requests", lambda r: fmt_requests(dig(r, *cont, "startup", "requests"))),
        ("RSS after startup", lambda r: fmt_mib(dig(r, *cont, "startup", "rss_kib"))),
        (
            "new servers created one by one",
            lambda r: fmt_count(dig(r, *cont, "new_instances", "count")),
        ),
        ("create → pod exists p50 / p95 / p99", latency("to_pod_s")),
        ("create → status podAddress p50 / p95 / p99", latency("to_address_s")),
        ("pod running → status podAddress p50 / p95 / p99", latency("running_to_address_s")),
        (
            "requests per new server",
            lambda r: _per_instance(
                dig(r, *cont, "new_instances"), dig(r, *cont, "new_instances", "count")
            ),
        ),
        (
            "CPU per new server",
            lambda r: _ratio_cell(
                dig(r, *cont, "new_instances", "cpu_s"), dig(r, *cont, "new_instances", "count")
            ),
        ),
        (
            "peak RSS with N + new servers",
            lambda r: fmt_mib(dig(r, *cont, "new_instances", "hwm_kib")),
        ),
        ("**Burst** (instances created at once)", lambda r: ""),
        ("instances", lambda r: fmt_count(dig(r, *cont, "burst", "count"))),
        ("hub's creates done", lambda r: fmt_seconds(dig(r, *cont, "burst", "hub_create_s"))),
        ("→ every pod exists", lambda r: fmt_seconds(dig(r, *cont, "burst", "to_all_pods_s"))),
        (
            "→ every status written",
            lambda r: fmt_seconds(dig(r, *cont, "burst", "to_all_statuses_s")),
        ),
        ("reconciler requests", lambda r: fmt_requests(dig(r, *cont, "burst", "requests"))),
        ("reconciler CPU", lambda r: fmt_seconds(dig(r, *cont, "burst", "cpu_s"))),
        (
            "create loop, same servers (from its first request)",
            lambda r: fmt_seconds(dig(r, loop, "burst", "elapsed_s")),
        ),
        (
            "ours ÷ create loop",
            lambda r: fmt_ratio(
                ratio(dig(r, *cont, "burst", "to_all_pods_s"), dig(r, loop, "burst", "elapsed_s"))
            ),
        ),
        ("peak RSS after the burst", lambda r: fmt_mib(dig(r, *cont, "burst", "hwm_kib"))),
        (
            "apiserver CPU: hub + ours, until every pod exists / create loop",
            lambda r: _pair_seconds(
                dig(r, *cont, "burst", "apiserver_cpu_to_pods_s"),
                dig(r, loop, "burst", "apiserver_cpu_s"),
            ),
        ),
        ("**Instances deleted** (the burst's; Kubernetes' GC)", lambda r: ""),
        (
            "delete → their pods gone",
            lambda r: fmt_seconds(dig(r, *cont, "instance_gc", "pods_gone_s")),
        ),
        (
            "reconciler requests meanwhile",
            lambda r: fmt_requests(dig(r, *cont, "instance_gc", "requests")),
        ),
        (
            "pods deleted by the reconciler / wasted deletes",
            lambda r: _pair(
                dig(r, *cont, "instance_gc", "pruned_by_reconciler"),
                dig(r, *cont, "instance_gc", "wasted_deletes"),
            ),
        ),
        ("**Orphan GC** (N/2 orphan pods, only the reconciler to delete them)", lambda r: ""),
        ("orphan pods", lambda r: fmt_count(dig(r, ours, "orphan_gc", "orphans"))),
        ("reconciler start → /readyz", lambda r: fmt_seconds(dig(r, ours, "orphan_gc", "ready_s"))),
        (
            "reconciler start → every orphan deleted",
            lambda r: fmt_seconds(dig(r, ours, "orphan_gc", "deleted_s")),
        ),
        (
            "/readyz → every orphan deleted",
            lambda r: fmt_seconds(dig(r, ours, "orphan_gc", "deleted_after_ready_s")),
        ),
        (
            "reconciler start → orphans gone (the node let them go)",
            lambda r: fmt_seconds(dig(r, ours, "orphan_gc", "pods_gone_s")),
        ),
        ("reconciler requests", lambda r: fmt_requests(dig(r, ours, "orphan_gc", "requests"))),
        (
            "pods deleted by the reconciler / wasted deletes",
            lambda r: _pair(
                dig(r, ours, "orphan_gc", "pruned_by_reconciler"),
                dig(r, ours, "orphan_gc", "wasted_deletes"),
            ),
        ),
        ("PVCs kept (Retain)", lambda r: fmt_count(dig(r, ours, "orphan_gc", "pvcs_kept"))),
        ("delete loop, same pods: wall", wall(loop, "delete")),
        ("delete loop: requests", reqs(loop, "delete")),
        (
            "wall ours (from /readyz) ÷ delete loop",
            lambda r: fmt_ratio(
                ratio(
                    dig(r, ours, "orphan_gc", "deleted_after_ready_s"),
                    dig(r, loop, "delete", "wall_s"),
                )
            ),
        ),
        ("**Two shards** (`--shard 0/2`, `--shard 1/2`, together)", lambda r: ""),
        ("start → both initial passes done", lambda r: _shards(r, "drained_s")),
        ("RSS of each", lambda r: _shards(r, "rss_kib")),
        ("CPU of each", lambda r: _shards(r, "cpu_s")),
        (
            "single reconciler: RSS / CPU at the same point",
            lambda r: _pair_text(
                fmt_mib(dig(r, *cont, "startup", "rss_kib")),
                fmt_seconds(dig(r, *cont, "startup", "cpu_s")),
            ),
        ),
    ]


def _pair(a: Any, b: Any) -> str:
    return _pair_text(fmt_count(a), fmt_count(b))


def _pair_seconds(a: Any, b: Any) -> str:
    return _pair_text(fmt_seconds(a), fmt_seconds(b))


def _pair_text(a: str, b: str) -> str:
    return f"{a} / {b}"


def _shards(r: Result, key: str) -> str:
    found = dig(r, "ours", "shards")
    if not found or "skipped" in found:
        return "skipped" if found else MISSING
    if key == "drained_s":
        return fmt_seconds(found.get(key))
    fmt = fmt_mib if key == "rss_kib" else fmt_seconds
    return " / ".join(fmt(s.get(key)) for s in found.get("each", []))


def summary_table(sizes: Mapping[str, Result]) -> str:
    """One row per figure, one column per N."""
    ns = sorted(sizes, key=int)
    rows = [[label, *(cell(sizes[n]) for n in ns)] for label, cell in _rows()]
    return markdown_table(["", *(f"N = {int(n):,}" for n in ns)], rows)


BREAKDOWN = (
    ("ours converge", ("ours", "converge")),
    ("ours idle", ("ours", "idle")),
    ("ours template change", ("ours", "template_change")),
    ("ours pass after the change", ("ours", "after_change")),
    ("ours continuous: startup", ("ours", "continuous", "startup")),
    ("ours continuous: new servers", ("ours", "continuous", "new_instances")),
    ("ours continuous: burst", ("ours", "continuous", "burst")),
    ("ours continuous: instances deleted", ("ours", "continuous", "instance_gc")),
    ("ours continuous: orphan GC", ("ours", "orphan_gc")),
    ("ours two shards: startup", ("ours", "shards")),
    ("kubectl apply", ("kubectl", "apply")),
    ("kubectl idle re-apply", ("kubectl", "idle")),
    ("kubectl template change", ("kubectl", "template_change")),
    ("create loop", ("create_loop", "create")),
    ("delete loop", ("create_loop", "delete")),
    ("create loop: burst", ("create_loop", "burst")),
)


def breakdown_table(sizes: Mapping[str, Result]) -> str:
    """Every measured window's requests by verb and resource (patch = server-side apply)."""
    rows = []
    for n in sorted(sizes, key=int):
        for label, path in BREAKDOWN:
            by_verb = dig(sizes[n], *path, "requests", "by_verb")
            if by_verb is not None:
                rows.append([f"{int(n):,}", label, fmt_breakdown(by_verb)])
    return markdown_table(["N", "run", "requests by verb (resource)"], rows)


def machine_table(machine: Mapping[str, Any]) -> str:
    keys = (
        ("date", "date (UTC)"),
        ("cpu_model", "CPU"),
        ("cpu_cores", "cores"),
        ("memory_gib", "memory (GiB)"),
        ("os", "OS"),
        ("python", "Python"),
        ("kubernetes", "Kubernetes"),
        ("jupyternetes_ssa", "jupyternetes-ssa"),
        ("git", "git"),
        ("load_average_at_start", "load average at start (1, 5, 15 min)"),
        ("load_average_at_end", "load average at end"),
    )
    rows = [[label, str(machine[k])] for k, label in keys if k in machine]
    return markdown_table(["machine", ""], rows)


def fixed_cost_line(step: Any) -> str:
    """The per-process floor every `reconcile --once` figure includes."""
    if not step:
        return ""
    return (
        f"Fixed cost of one `reconcile --once` process on an empty namespace: "
        f"{fmt_seconds(step.get('wall_s'))} wall, {fmt_seconds(step.get('cpu_s'))} CPU, "
        f"{fmt_requests(step.get('requests'))} "
        f"requests, {fmt_mib(step.get('max_rss_kib'))} peak RSS."
    )


def durations_line(sizes: Mapping[str, Result]) -> str:
    """How long each size took to run, every contender included (the cluster's start not)."""
    done = [(int(n), r["size_s"]) for n, r in sizes.items() if r.get("size_s") is not None]
    if not done:
        return ""
    each = ", ".join(f"N = {n:,}: {fmt_seconds(s)}" for n, s in sorted(done))
    return f"Run time of each size: {each}."


def render(results: Mapping[str, Any]) -> str:
    sizes = results.get("sizes", {})
    parts = [machine_table(results.get("machine", {}))]
    if line := fixed_cost_line(results.get("fixed_cost")):
        parts.append(line)
    if line := durations_line(sizes):
        parts.append(line)
    if sizes:
        parts += [
            targets_table(sizes, results.get("fixed_cost")),
            summary_table(sizes),
            breakdown_table(sizes),
        ]
    return "\n\n".join(parts) + "\n"
