"""The `jupyternetes-ssa` command: a thin layer that parses options into Settings and calls in."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from jupyternetes_ssa import __version__
from jupyternetes_ssa.errors import JupyternetesError
from jupyternetes_ssa.settings import Settings

app = typer.Typer(
    help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)


@app.command(
    "local-cluster",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def local_cluster(ctx: typer.Context) -> None:
    """A real Kubernetes control plane on this machine, as plain processes (up, down, env, status).

    Imported only when this command runs: the reconciler never loads it, and its image lacks it.
    """
    try:
        from jupyternetes_ssa.local_cluster.cli import app as local_cluster_app
    except ImportError as err:
        fail(
            f"the local cluster is not part of this installation ({err}); the reconciler's "
            "container image leaves it out: pip install jupyternetes-ssa to use it"
        )
    local_cluster_app(args=ctx.args, prog_name=ctx.command_path)


@app.command(
    "sealing-key",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sealing_key(ctx: typer.Context) -> None:
    """The reconciler's keys for sealed API tokens: show, rotate, retire.

    Imported only when this command runs (it brings in the cryptography library)."""
    from jupyternetes_ssa.keys_cli import app as sealing_key_app

    sealing_key_app(args=ctx.args, prog_name=ctx.command_path)


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
    """The objects of a YAML file, read with bounded size, depth and alias expansion."""
    from jupyternetes_ssa.load import LoadError, load_documents

    try:
        return load_documents(path)
    except LoadError as err:
        fail(str(err))
        raise  # unreachable: fail exits


@app.command()
def render(
    template: Annotated[Path, typer.Option(help="YAML file with one or more templates.")],
    instance: Annotated[Path, typer.Option(help="YAML file with the instance.")],
    output: Annotated[Format, typer.Option(help="yaml or json.")] = Format.yaml,
) -> None:
    """Print the PVCs and pods an instance gets from its template (offline, no cluster)."""
    from jupyternetes_ssa.render import select_template
    from jupyternetes_ssa.validate import check_instance, check_pair, instance_subject

    templates = [d for d in _load_docs(template) if d.get("kind") == "JupyterNotebookTemplate"]
    instances = [d for d in _load_docs(instance) if d.get("kind") == "JupyterNotebookInstance"]
    if len(instances) != 1:
        fail(f"{instance}: expected exactly one JupyterNotebookInstance, found {len(instances)}")
    problems = check_instance(instances[0], instance_subject(instances[0], str(instance)))
    _fail_on(problems)
    try:
        chosen = select_template(templates, instances[0])
    except JupyternetesError as err:
        fail(f"{instance}: {err}")
    rendered, problems, notes = check_pair(
        chosen, instances[0], template_origin=str(template), instance_origin=str(instance)
    )
    _fail_on(problems)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    manifests = [i.manifest for i in rendered.items]
    if output == Format.json:
        typer.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}, indent=2))
    else:
        typer.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)


def _fail_on(problems: list[JupyternetesError]) -> None:
    """Every problem on its own line, then exit 1."""
    if problems:
        typer.echo("\n".join(f"error: {p}" for p in problems), err=True)
        raise typer.Exit(1)


@app.command()
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="YAML files of templates and instances (a directory: its YAML files).",
            show_default=False,
        ),
    ],
    output: Annotated[Output, typer.Option(help="text or json.")] = Output.text,
) -> None:
    """Check templates (and instances, rendered against their templates) without a cluster.

    Exit 0 when every file is valid, 1 otherwise (every problem is listed).
    """
    from jupyternetes_ssa.validate_files import report_json, report_text, validate_files

    report = validate_files(files)
    text = report_json(report) if output == Output.json else report_text(report)
    typer.echo(text)
    raise typer.Exit(0 if report.ok else 1)


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
        "--template-namespace",
        help="Only templates from this namespace (or a catalogue) may be used (repeatable).",
    ),
]
CatalogNamespaces = Annotated[
    list[str],
    typer.Option(
        "--catalog-namespace",
        help="Templates in this namespace serve instances of every served namespace "
        "(repeatable; default: none: a template serves its own namespace and those it grants).",
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
    from jupyternetes_ssa.kube import ApiError, CannotConnect
    from jupyternetes_ssa.observe import collector_paused
    from jupyternetes_ssa.reconcile import reconcile_once

    try:
        kube = await _connect(kubeconfig, context)
        try:
            with collector_paused():  # one short pass: its cycles go at its end (observe.py)
                return await reconcile_once(kube, settings, prune_only=prune_only)
        finally:
            await kube.close()
    except CannotConnect as err:  # no kubeconfig, unreachable server
        _cannot_connect(kubeconfig, err)
    except ApiError as err:
        fail(f"could not read the cluster, nothing was changed: {err}")
    except JupyternetesError as err:
        fail(str(err), 2)


def _cannot_connect(kubeconfig: str | None, err: Exception) -> None:
    where = kubeconfig or "the default kubeconfig or in-cluster service account"
    fail(
        f"could not connect to the cluster with {where} ({err}); "
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
    catalog_namespace: CatalogNamespaces = [],  # noqa: B006
    allow_kind: AllowKinds = [],  # noqa: B006
    recreate_pods: Annotated[
        bool,
        typer.Option(help="Every pod item updateStrategy Recreate: re-create changed pods."),
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Report what would change; write nothing.")] = False,
    output: Annotated[Output, typer.Option(help="Summary format (once mode).")] = Output.text,
    concurrency: Annotated[int, typer.Option(help="Instances reconciled at once.")] = 8,
    gc_concurrency: Annotated[
        int, typer.Option(help="Deletes at once when collecting what no instance wants.")
    ] = 20,
    resync_seconds: Annotated[float, typer.Option(help="Continuous: full pass period.")] = 300.0,
    status_interval: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Continuous: seconds between an instance's status writes that only report "
            "progress (a verdict, such as Ready, is written at once).",
        ),
    ] = 3.0,
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
    shard: Annotated[
        str,
        typer.Option(
            help="I/N: serve only shard I (0-based) of N, split by a hash of each instance's "
            "namespace/name; run one reconciler per shard (README, Sharding)."
        ),
    ] = "0/1",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Make the cluster match the instances and templates (continuous unless --once)."""
    from jupyternetes_ssa.logs import setup_logging
    from jupyternetes_ssa.shard import BadShard, parse

    try:
        chosen = parse(shard)
    except BadShard as err:
        fail(str(err), 2)
    setup_logging(log_format, log_level)
    settings = _settings(
        namespace,
        template_namespace,
        allow_kind,
        catalog_namespaces=tuple(catalog_namespace),
        recreate_pods=recreate_pods,
        dry_run=dry_run,
        concurrency=concurrency,
        gc_concurrency=gc_concurrency,
        resync_seconds=resync_seconds,
        status_interval_seconds=status_interval,
        leader_elect=leader_elect,
        lease_namespace=lease_namespace,
        lease_name=lease_name,
        lease_duration_seconds=lease_duration,
        renew_deadline_seconds=renew_deadline,
        retry_period_seconds=retry_period,
        health_port=health_port,
        health_host=health_host,
        key_namespace=key_namespace,
        shard=chosen,
    )
    if once or dry_run:
        summary = _pass_and_report(kubeconfig, context, settings, output)
        raise typer.Exit(0 if summary.ok else 1)
    from jupyternetes_ssa.controller import run_controller
    from jupyternetes_ssa.kube import CannotConnect

    try:
        code = _run(run_controller(kubeconfig, context, settings))
    except CannotConnect as err:
        _cannot_connect(kubeconfig, err)
    raise typer.Exit(code)


@app.command()
def diff(
    namespace: Namespaces = [],  # noqa: B006
    template_namespace: TemplateNamespaces = [],  # noqa: B006
    catalog_namespace: CatalogNamespaces = [],  # noqa: B006
    allow_kind: AllowKinds = [],  # noqa: B006
    output: Annotated[Output, typer.Option(help="text or json.")] = Output.text,
    key_namespace: KeyNamespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Show what a reconcile would change, from a server-side dry-run (writes nothing)."""
    settings = _settings(
        namespace,
        template_namespace,
        allow_kind,
        catalog_namespaces=tuple(catalog_namespace),
        dry_run=True,
        key_namespace=key_namespace,
    )
    summary = _pass_and_report(kubeconfig, context, settings, output)
    raise typer.Exit(0 if summary.ok else 1)


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete.")] = False,
    namespace: Namespaces = [],  # noqa: B006
    template_namespace: TemplateNamespaces = [],  # noqa: B006
    catalog_namespace: CatalogNamespaces = [],  # noqa: B006
    allow_kind: AllowKinds = [],  # noqa: B006
    output: Annotated[Output, typer.Option(help="text or json.")] = Output.text,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Garbage-collect pods (and PVCs whose policy is Delete) that no instance wants."""
    if dry_run == yes:
        fail("say exactly one of --dry-run (list what would be deleted) or --yes (delete it)", 2)
    settings = _settings(
        namespace,
        template_namespace,
        allow_kind,
        catalog_namespaces=tuple(catalog_namespace),
        dry_run=dry_run,
    )
    summary = _pass_and_report(kubeconfig, context, settings, output, prune_only=True)
    raise typer.Exit(1 if summary.prune_error else 0)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
