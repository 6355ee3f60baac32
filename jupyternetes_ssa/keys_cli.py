"""`jupyternetes-ssa sealing-key`: show, rotate and retire the reconciler's sealing keys."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from jupyternetes_ssa import keys
from jupyternetes_ssa.errors import JupyternetesError
from jupyternetes_ssa.kube import INSTANCE, ApiError, Kube
from jupyternetes_ssa.sealing import Keyring

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

KeyNamespace = Annotated[
    str,
    typer.Option(
        "--key-namespace",
        help="The reconciler's namespace, where its keys live.",
        show_default=True,
    ),
]
Kubeconfig = Annotated[str | None, typer.Option(envvar="KUBECONFIG", help="Kubeconfig file.")]
Context = Annotated[str | None, typer.Option(help="Kubeconfig context.")]


def _run(work, kubeconfig: str | None, context: str | None):
    async def main():
        kube = await Kube.connect(kubeconfig=kubeconfig, context=context)
        try:
            return await work(kube)
        finally:
            await kube.close()

    try:
        return asyncio.run(main())
    except (JupyternetesError, ApiError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


def _describe(ring: Keyring, used: dict[str, int]) -> str:
    return "\n".join(
        f"{kid}{' (current)' if kid == ring.current else ''}: {used.get(kid, 0)} instance(s)"
        for kid in sorted(ring.keys)
    )


async def _usage(kube: Kube) -> dict[str, int]:
    """How many instances (in every namespace this identity can list) use each key."""
    used: dict[str, int] = {}
    for instance in (await kube.list(INSTANCE)).items:
        kid = ((instance.get("spec") or {}).get("sealedApiToken") or {}).get("keyId")
        if isinstance(kid, str):
            used[kid] = used.get(kid, 0) + 1
    return used


@app.command()
def show(
    key_namespace: KeyNamespace = "jupyternetes-system",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """List the keys, the current one, and how many instances use each."""

    async def work(kube: Kube) -> str:
        ring = await keys.load(kube, key_namespace)
        if ring is None:
            raise JupyternetesError(
                f"no Secret {key_namespace}/{keys.KEY_SECRET}",
                fix="start the reconciler once (it creates it), or check --key-namespace",
            )
        return _describe(ring, await _usage(kube))

    typer.echo(_run(work, kubeconfig, context))


@app.command()
def rotate(
    key_namespace: KeyNamespace = "jupyternetes-system",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Add a new key and publish it; servers sealed with older keys keep working."""

    async def work(kube: Kube) -> str:
        ring = await keys.rotate(kube, key_namespace)
        return f"new current key {ring.current}\n{_describe(ring, await _usage(kube))}"

    typer.echo(_run(work, kubeconfig, context))


@app.command()
def retire(
    key_id: Annotated[str, typer.Argument(help="The key to remove.")],
    force: Annotated[
        bool, typer.Option(help="Retire it even though instances still use it.")
    ] = False,
    key_namespace: KeyNamespace = "jupyternetes-system",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Remove an old key once no instance uses it (their servers would fail to reconcile)."""

    async def work(kube: Kube) -> str:
        using = (await _usage(kube)).get(key_id, 0)
        if using and not force:
            raise JupyternetesError(
                f"{using} instance(s) still use key {key_id}",
                fix="wait until those servers have been restarted (they then use the current "
                "key), or pass --force",
            )
        ring = await keys.retire(kube, key_namespace, key_id)
        return f"retired {key_id}\n{_describe(ring, await _usage(kube))}"

    typer.echo(_run(work, kubeconfig, context))
