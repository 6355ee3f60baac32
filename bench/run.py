"""``python -m bench.run``: benchmark jupyternetes-ssa at N notebook servers against baselines.

For each N: kubectl apply --server-side (baseline a), a direct create and delete loop (baseline
b), then jupyternetes-ssa (once mode: converge, idle, template change; continuous mode: shards,
start-up, new servers one by one, a burst, garbage collection), each in its own namespace. Prints
Markdown tables, the issue's targets with PASS/FAIL, and writes every figure as JSON. See
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kr8s.asyncio

from bench import continuous, phases, report
from bench.audit import AuditLog
from bench.cluster import (
    Scraper,
    Target,
    begin_namespace_deletion,
    fresh_namespace,
    install_flow_schemas,
    kubernetes_version,
    make_hub,
    make_subject,
    remove_attribution,
    wait_attribution,
)
from bench.machine import machine_info
from jupyternetes_ssa.kube import Kube

log = logging.getLogger("bench")
DEFAULT_JSON = Path("bench-results/latest.json")
DEFAULT_SIZES = [100, 1000, 5000]
CONTENDERS = ("kubectl", "create_loop", "ours")


def parse_sizes(text: str) -> list[int]:
    """``"100,1000"`` -> [100, 1000]; every size a positive integer."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(n < 2 for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 2, got {text!r}")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=DEFAULT_SIZES, help="default 100,1000,5000"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    parser.add_argument(
        "--keep-cluster", action="store_true", help="leave the local cluster running at the end"
    )
    parser.add_argument(
        "--kubeconfig", type=Path, help="use this cluster (admin rights) instead of a local one"
    )
    parser.add_argument("--kubectl", help="kubectl binary (default: the local cluster's)")
    parser.add_argument("--concurrency", type=int, default=8, help="ours and the create loop")
    parser.add_argument(
        "--gc-concurrency",
        type=int,
        default=20,
        help="deletes at once: ours (--gc-concurrency, its default) and the delete loop",
    )
    parser.add_argument(
        "--new-instances", type=int, default=100, help="servers created one by one (continuous)"
    )
    parser.add_argument(
        "--burst", type=int, default=500, help="instances created at once (continuous)"
    )
    parser.add_argument(
        "--baseline-max",
        type=int,
        default=1000,
        help="largest N at which kubectl and the create loop converge all N (default 1000)",
    )
    parser.add_argument(
        "--only", default=",".join(CONTENDERS), help=f"subset of {','.join(CONTENDERS)}"
    )
    parser.add_argument("--render", type=Path, help="print the tables of a results JSON and exit")
    args = parser.parse_args(argv)
    args.only = [c for c in args.only.split(",") if c]
    if unknown := set(args.only) - set(CONTENDERS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    return args


def write_results(results: dict[str, Any], path: Path) -> None:
    """JSON and a Markdown rendering beside it; rewritten after every size (a crash keeps the
    sizes already done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    path.with_suffix(".md").write_text(report.render(results))


async def bench_ours(env: phases.Env, n: int) -> dict[str, Any]:
    """Once mode, then continuous mode, on the same namespace."""
    ns = env.namespace("ours", n)
    await fresh_namespace(env.admin, ns, env.deadline(n))
    out = await phases.bench_ours_once(env, ns, n)
    out.update(await continuous.bench_ours_continuous(env, ns, n))
    await begin_namespace_deletion(env.admin, ns)
    return out


async def bench_size(env: phases.Env, n: int, only: list[str]) -> dict[str, Any]:
    runners = {
        "kubectl": phases.bench_kubectl if n <= env.baseline_max else None,
        "create_loop": phases.bench_create_loop,
        "ours": bench_ours,
    }
    out: dict[str, Any] = {}
    for name in CONTENDERS:
        if name in only and runners[name] is not None:
            log.info("N=%d: %s", n, name)
            started = time.monotonic()
            out[name] = await runners[name](env, n)
            out[name]["phase_s"] = time.monotonic() - started
            log.info("N=%d: %s took %.0fs", n, name, out[name]["phase_s"])
    return out


async def run(args: argparse.Namespace, target: Target, workdir: Path) -> dict[str, Any]:
    api = await kr8s.asyncio.api(kubeconfig=str(target.kubeconfig))
    admin = Kube(api)
    from jupyternetes_ssa.local_cluster import install_crds

    # every helper gets `admin`, not the bare Api: wrapping that would open a session of its own
    await install_crds(admin)
    subject_kubeconfig = await make_subject(
        admin, target.kubeconfig, workdir / "subject.kubeconfig"
    )
    hub_kubeconfig = await make_hub(admin, target.kubeconfig, workdir / "hub.kubeconfig")
    log.info(
        "installed %d FlowSchemas to count the subject's requests",
        await install_flow_schemas(admin),
    )
    scraper = Scraper(target.kubectl, target.kubeconfig)
    subject = await Kube.connect(kubeconfig=str(subject_kubeconfig))
    await wait_attribution(scraper, subject)
    env = phases.Env(
        admin=admin,
        admin_kubeconfig=target.kubeconfig,
        subject_kubeconfig=subject_kubeconfig,
        hub_kubeconfig=hub_kubeconfig,
        kubectl=target.kubectl,
        scraper=scraper,
        logs=workdir,
        audit=AuditLog(target.audit_log),
        run_id=f"{int(time.time()) % 100000:05d}",
        concurrency=args.concurrency,
        gc_concurrency=args.gc_concurrency,
        new_instances=args.new_instances,
        burst=args.burst,
        baseline_max=args.baseline_max,
    )
    results: dict[str, Any] = {
        "machine": machine_info(await kubernetes_version(admin)),
        "options": {
            "sizes": args.sizes,
            "concurrency": args.concurrency,
            "gc_concurrency": args.gc_concurrency,
            "new_instances": args.new_instances,
            "burst": args.burst,
            "baseline_max": args.baseline_max,
            "contenders": args.only,
            "cluster": "existing" if target.state_dir is None else "local",
        },
        "sizes": {},
    }
    try:
        if "ours" in args.only:
            results["fixed_cost"] = await phases.fixed_cost(env)
        for n in args.sizes:
            started = time.monotonic()
            results["sizes"][str(n)] = await bench_size(env, n, args.only)
            results["sizes"][str(n)]["size_s"] = time.monotonic() - started
            results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            write_results(results, args.json)
    finally:
        if target.state_dir is None:
            await remove_attribution(admin)
        for client in (subject, admin):
            await client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(report.render(json.loads(args.render.read_text())), end="")
        return 0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="jupyternetes-bench-"))
    if args.kubeconfig:
        target = Target.existing(args.kubeconfig, args.kubectl)
    else:
        target = Target.start_local(workdir / "cluster", keep=args.keep_cluster)
    ok = False
    try:
        results = asyncio.run(run(args, target, workdir))
        print(report.render(results), end="")
        log.info("results: %s (logs in %s)", args.json, workdir)
        ok = True
    finally:
        if args.keep_cluster and target.state_dir is not None:
            log.info(
                "cluster kept: KUBECONFIG=%s; stop it with "
                "`jupyternetes-ssa local-cluster down --state-dir %s`",
                target.kubeconfig,
                target.state_dir,
            )
        else:
            target.stop()
            if ok:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
