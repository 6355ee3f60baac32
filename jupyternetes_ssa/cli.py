"""The `jupyternetes-ssa` command: a thin layer that parses options into Settings and calls in."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer
import yaml

from jupyternetes_ssa import __version__
from jupyternetes_ssa.errors import JupyternetesError
from jupyternetes_ssa.keys_cli import app as sealing_key_app
from jupyternetes_ssa.local_cluster.cli import app as local_cluster_app
from jupyternetes_ssa.settings import Settings

app = typer.Typer(
    help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
app.add_typer(
    local_cluster_app,
    name="local-cluster",
    help="A real Kubernetes control plane on this machine, as plain processes.",
)
app.add_typer(
    sealing_key_app,
    name="sealing-key",
    help="The reconciler's keys for sealed API tokens: show, rotate, retire.",
)


class Output(StrEnum):
    """How a pass is summarised."""

    text = "text"
    json = "json"


class Format(StrEnum):
    """How rendered manifests are printed."""

    yaml = "yaml"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
):
    """Render JupyterNotebookTemplates for JupyterNotebookInstances and converge them."""


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load_docs(path: Path) -> list[dict]:
    """The YAML documents of a file that are objects (a list or a scalar is no manifest)."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        fail(f"{path}: {err}")
        raise  # unreachable: fail exits
    for number, doc in enumerate(docs, 1):
        if doc is not None and not isinstance(doc, dict):
            fail(
                f"{path}: document {number} is a {type(doc).__name__}, not a Kubernetes "
                "object; each YAML document must be a mapping with apiVersion, kind, metadata"
            )
    return [d for d in docs if d]


@app.command()
def render(
    template: Annotated[Path, typer.Option(help="YAML file with one or more templates.")],
    instance: Annotated[Path, typer.Option(help="YAML file with the instance.")],
    output: Annotated[Format, typer.Option(help="yaml or json.")] = Format.yaml,
) -> None:
    """Print the PVCs and pods an instance gets from its template (offline, no cluster)."""
    from jupyternetes_ssa.render import render as do_render
    from jupyternetes_ssa.render import select_template

    templates = [d for d in _load_docs(template) if d.get("kind") == "JupyterNotebookTemplate"]
    instances = [d for d in _load_docs(instance) if d.get("kind") == "JupyterNotebookInstance"]
    if len(instances) != 1:
        fail(f"{instance}: expected exactly one JupyterNotebookInstance, found {len(instances)}")
    try:
        rendered = do_render(select_template(templates, instances[0]), instances[0])
    except JupyternetesError as err:
        fail(str(err))
    manifests = [i.manifest for i in rendered.items]
    if output == Format.json:
        typer.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}, indent=2))
    else:
        typer.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)


@app.command()
def crds() -> None:
    """Print our CustomResourceDefinitions (pipe into `kubectl apply -f -`)."""
    from jupyternetes_ssa.crds import crd_texts

    typer.echo("---\n".join(crd_texts()), nl=False)


Namespaces = Annotated[
    list[str],
    typer.Option(
        "--namespace", "-n", help="Serve instances in this namespace (repeatable; default: all)."
    ),
]
TemplateNamespaces = Annotated[
    list[str],
    typer.Option(
        "--template-namespace", help="Only templates from this namespace may be used (repeatable)."
    ),
]
AllowKinds = Annotated[
    list[str],
    typer.Option(
        "--allow-kind",
        help="Let templates create this namespaced kind as otherResources: Kind or Kind.group "
        "(repeatable; default: none).",
    ),
]
KeyNamespace = Annotated[
    str | None,
    typer.Option(
        help="Namespace of the sealing keys (default: POD_NAMESPACE, else the service account's)."
    ),
]
Kubeconfig = Annotated[str | None, typer.Option(envvar="KUBECONFIG", help="Kubeconfig file.")]
Context = Annotated[str | None, typer.Option(help="Kubeconfig context.")]


def _settings(
    namespace: list[str], template_namespace: list[str], allow_kind: list[str], **kw
) -> Settings:
    if kw.get("key_namespace", "") is None:
        del kw["key_namespace"]
    return Settings(
        namespaces=tuple(namespace),
        template_namespaces=tuple(template_namespace),
        allow_kinds=tuple(allow_kind),
        **kw,
    )


def _run(coro):
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _connect(kubeconfig: str | None, context: str | None):
    from jupyternetes_ssa.kube import Kube

    return await Kube.connect(kubeconfig=kubeconfig, context=context)


async def _pass(kubeconfig, context, settings: Settings, prune_only: bool = False):
    from jupyternetes_ssa.kube import ApiError
    from jupyternetes_ssa.reconcile import reconcile_once

    try:
        kube = await _connect(kubeconfig, context)
        return await reconcile_once(kube, settings, prune_only=prune_only)
    except ApiError as err:
        fail(f"could not read the cluster, nothing was changed: {err}")
    except JupyternetesError as err:
        fail(str(err), 2)
    except (OSError, ValueError, httpx.HTTPError) as err:  # no kubeconfig, unreachable server
        where = kubeconfig or "the default kubeconfig or in-cluster service account"
        fail(
            f"could not connect to the cluster with {where} ({type(err).__name__}: {err}); "
            "check --kubeconfig/KUBECONFIG and --context. Nothing was changed"
        )


def _pass_and_report(
    kubeconfig, context, settings: Settings, output: Output, *, prune_only: bool = False
):
    """One pass, summarised on stdout; the caller turns the summary into an exit code."""
    summary = _run(_pass(kubeconfig, context, settings, prune_only))
    _report(summary, output, settings.dry_run)
    return summary


def _report(summary, output: Output, dry_run: bool) -> None:
    from jupyternetes_ssa.report import summary_json, summary_text

    text = summary_json(summary) if output == Output.json else summary_text(summary, dry_run)
    typer.echo(text)


@app.command()
def reconcile(
    once: Annotated[bool, typer.Option(help="One full pass, then exit (for a CronJob).")] = False,
    namespace: Namespaces = [],  # noqa: B006 (typer reads the default)
    template_namespace: TemplateNamespaces = [],  # noqa: B006
    allow_kind: AllowKinds = [],  # noqa: B006
    recreate_pods: Annotated[
        bool,
        typer.Option(help="Delete and re-create pods whose change Kubernetes forbids in place."),
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Report what would change; write nothing.")] = False,
    output: Annotated[Output, typer.Option(help="Summary format (once mode).")] = Output.text,
    concurrency: Annotated[int, typer.Option(help="Instances reconciled at once.")] = 8,
    resync_seconds: Annotated[float, typer.Option(help="Continuous: full pass period.")] = 300.0,
    leader_elect: Annotated[
        bool, typer.Option(help="Continuous: only the Lease holder works.")
    ] = False,
    lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the leader Lease.")
    ] = "default",
    lease_name: Annotated[str, typer.Option(help="Name of the leader Lease.")] = "jupyternetes-ssa",
    lease_duration: Annotated[float, typer.Option(help="Seconds a lease lasts unrenewed.")] = 15.0,
    renew_deadline: Annotated[
        float, typer.Option(help="A leader that cannot renew for this long steps down.")
    ] = 10.0,
    retry_period: Annotated[float, typer.Option(help="Seconds between lease attempts.")] = 2.0,
    health_port: Annotated[
        int, typer.Option(help="Continuous: /healthz /readyz /metrics port (0: off).")
    ] = 8080,
    health_host: Annotated[
        str, typer.Option(help="Address the health/metrics server binds (127.0.0.1: local only).")
    ] = "0.0.0.0",
    log_format: Annotated[Output, typer.Option(help="text or json.")] = Output.text,
    log_level: Annotated[LogLevel, typer.Option(help="Least severe level logged.")] = LogLevel.info,
    key_namespace: KeyNamespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Make the cluster match the instances and templates (continuous unless --once)."""
    from jupyternetes_ssa.logs import setup_logging

    setup_logging(log_format, log_level)
    settings = _settings(
        namespace,
        template_namespace,
        allow_kind,
        recreate_pods=recreate_pods,
        dry_run=dry_run,
        concurrency=concurrency,
        resync_seconds=resync_seconds,
        leader_elect=leader_elect,
        lease_namespace=lease_namespace,
        lease_name=lease_name,
        lease_duration_seconds=lease_duration,
        renew_deadline_seconds=renew_deadline,
        retry_period_seconds=retry_period,
        health_port=health_port,
        health_host=health_host,
        key_namespace=key_namespace,
    )
    if once or dry_run:
        summary = _pass_and_report(kubeconfig, context, settings, output)
        raise typer.Exit(0 if summary.ok else 1)
    from jupyternetes_ssa.controller import run_controller

    raise typer.Exit(_run(run_controller(kubeconfig, context, settings)))


@app.command()
def diff(
    namespace: Namespaces = [],  # noqa: B006
    template_namespace: TemplateNamespaces = [],  # noqa: B006
    allow_kind: AllowKinds = [],  # noqa: B006
    output: Annotated[Output, typer.Option(help="text or json.")] = Output.text,
    key_namespace: KeyNamespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Show what a reconcile would change, from a server-side dry-run (writes nothing)."""
    settings = _settings(
        namespace, template_namespace, allow_kind, dry_run=True, key_namespace=key_namespace
    )
    summary = _pass_and_report(kubeconfig, context, settings, output)
    raise typer.Exit(0 if summary.ok else 1)


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete.")] = False,
    namespace: Namespaces = [],  # noqa: B006
    template_namespace: TemplateNamespaces = [],  # noqa: B006
    allow_kind: AllowKinds = [],  # noqa: B006
    output: Annotated[Output, typer.Option(help="text or json.")] = Output.text,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Garbage-collect pods (and PVCs whose policy is Delete) that no instance wants."""
    if dry_run == yes:
        fail("say exactly one of --dry-run (list what would be deleted) or --yes (delete it)", 2)
    settings = _settings(namespace, template_namespace, allow_kind, dry_run=dry_run)
    summary = _pass_and_report(kubeconfig, context, settings, output, prune_only=True)
    raise typer.Exit(1 if summary.prune_error else 0)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
