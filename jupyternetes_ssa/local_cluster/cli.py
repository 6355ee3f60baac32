"""``jupyternetes-ssa local-cluster``: run a real control plane as local processes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from jupyternetes_ssa.kube import ApiError

from . import cluster as lc
from .procs import alive
from .waiting import GiveUp

app = typer.Typer(
    help="A local Kubernetes control plane (etcd, apiserver, controllers, scheduler, fake node).",
    no_args_is_help=True,
    add_completion=False,
)
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where keys, logs and data live "
        "[default: ${XDG_STATE_HOME:-~/.local/state}/jupyternetes-ssa/local-cluster]",
        show_default=False,
    ),
]


@app.command()
def up(
    state_dir: StateDir = None,
    bin_dir: Annotated[
        Path | None,
        typer.Option(help="Binary cache [default: ~/.cache/jupyternetes-ssa/kube/<v>/bin]"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness")] = 120.0,
) -> None:
    """Build missing binaries, start the cluster and wait until it is ready (no-op if running)."""
    try:
        cluster = lc.up(state_dir, bin_dir=bin_dir, timeout=timeout)
    except (GiveUp, TimeoutError, RuntimeError, FileNotFoundError, ApiError) as error:
        typer.echo(f"local-cluster: up failed: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"apiserver:  {cluster.apiserver_url}")
    typer.echo(f"kubeconfig: {cluster.kubeconfig}")
    typer.echo('use it:     eval "$(jupyternetes-ssa local-cluster env)"')


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop every process (SIGTERM, then SIGKILL) and delete the state directory."""
    if lc.down(state_dir):
        typer.echo("local cluster stopped and removed")
    else:
        typer.echo("no local cluster here")


@app.command()
def env(state_dir: StateDir = None) -> None:
    """Print shell exports for kubectl: eval "$(jupyternetes-ssa local-cluster env)"."""
    cluster = lc.status(state_dir)
    if cluster is None:
        typer.echo("no local cluster: run `jupyternetes-ssa local-cluster up`", err=True)
        raise typer.Exit(1)
    typer.echo(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
    typer.echo(f'export PATH={shlex.quote(str(cluster.bin_dir))}:"$PATH"')


@app.command()
def status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Show each component and whether it runs; exit 1 unless all of them do."""
    cluster = lc.status(state_dir)
    if cluster is None:
        typer.echo("not running (no state)", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(lc.describe(cluster), indent=2))
    else:
        typer.echo(f"apiserver:  {cluster.apiserver_url}")
        typer.echo(f"kubeconfig: {cluster.kubeconfig}")
        for proc in cluster.processes:
            state = "running" if alive(proc) else "DEAD"
            typer.echo(f"  {proc.name:<24} pid {proc.pid:<8} {state:<8} {proc.log}")
        if cluster.reaper is not None and alive(cluster.reaper):
            owner = cluster.reaper.argv[3].removeprefix("--pid=")
            typer.echo(f"  (taken down automatically when process {owner} exits)")
    if not cluster.running():
        raise typer.Exit(1)
