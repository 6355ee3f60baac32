"""The offline validation and the real apiserver agree, and the reconciler validates first.

For every `cluster` case of the corpus (tests/validation_cases.py) the objects the plain renderer
makes are sent to the apiserver as a server-side dry-run create with strict field validation:
the server must refuse them, with the expected words, and the offline layer must refuse the same
input at the expected field path. The shipped examples pass both. Then the reconciler: a broken
template gives its instance a precise status error, and nothing of it is applied.
"""

from __future__ import annotations

import json

import pytest
import yaml
from reconcile_helpers import condition, once, owned, put, result_for, seed_instance, status_of
from validation_cases import CLUSTER_CASES, EXAMPLES, Case

from jupyternetes_ssa.kube import ApiError, Kube
from jupyternetes_ssa.render import render, select_template
from jupyternetes_ssa.types import Rendered
from jupyternetes_ssa.validate import check_pair

pytestmark = pytest.mark.integration


def into_namespace(template: dict, instance: dict, namespace: str) -> tuple[dict, dict]:
    """The pair with the instance (and so its objects) moved into the test's namespace."""
    instance["metadata"]["namespace"] = namespace
    variables = instance["spec"].setdefault("variables", {})
    if "jupyternetes.instance.namespace" in variables:
        variables["jupyternetes.instance.namespace"] = namespace
    return template, instance


async def server_errors(kube: Kube, rendered: Rendered) -> list[str]:
    """What the apiserver says to each object: a dry-run create, unknown fields refused."""
    errors = []
    for item in rendered.items:
        manifest = item.manifest
        res = await kube.resource(manifest["apiVersion"], manifest["kind"])
        try:
            await kube.request(
                "POST",
                res,
                manifest["metadata"]["namespace"],
                res.url(),
                content=json.dumps(manifest),
                params={"dryRun": "All", "fieldValidation": "Strict"},
            )
        except ApiError as err:
            errors.append(f"{item.section}[{item.item}]: {err}")
    return errors


@pytest.mark.parametrize("case", CLUSTER_CASES, ids=lambda c: c.id)
async def test_the_apiserver_and_the_offline_layer_both_refuse(
    kube: Kube, namespace: str, case: Case
):
    template, instance = into_namespace(*case.documents(), namespace)

    _, problems, _ = check_pair(template, instance)
    server = await server_errors(kube, render(template, instance))

    assert any(p.path == case.path for p in problems), [str(p) for p in problems]
    assert any(case.cluster in error for error in server), server


def example_pairs() -> list[tuple[str, dict, dict]]:
    docs = [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict)
    ]
    templates = [d for d in docs if d.get("kind") == "JupyterNotebookTemplate"]
    instances = [d for d in docs if d.get("kind") == "JupyterNotebookInstance"]
    return [(i["metadata"]["name"], select_template(templates, i), i) for i in instances]


@pytest.mark.parametrize(("name", "template", "instance"), example_pairs(), ids=lambda v: "")
async def test_every_shipped_example_passes_both_layers(
    kube: Kube, namespace: str, name: str, template: dict, instance: dict
):
    template, instance = into_namespace(template, instance, namespace)

    rendered, problems, notes = check_pair(template, instance)

    assert problems == [] and notes == [], name
    assert rendered is not None
    assert await server_errors(kube, rendered) == [], name


async def test_an_instance_of_a_broken_template_gets_the_message_and_nothing_is_applied(
    kube: Kube, namespace: str
):
    template = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
    template["metadata"] = {"name": "default-template", "namespace": namespace}
    pod = template["spec"]["pods"][0]["spec"]  # (the CRD itself refuses unknown item fields)
    pod["containers"][0]["resources"] = {"limit": {"cpu": "1"}}
    pod["restartPolicy"] = "Sometimes"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace)

    result = result_for(summary, "jovyan")
    assert result.reason == "RenderFailed"
    assert result.outcomes == []  # refused before any object was sent
    degraded = condition(await status_of(kube, namespace, "jovyan"), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RenderFailed")
    message = degraded["message"]
    assert f"JupyterNotebookTemplate {namespace}/default-template" in message
    assert (
        'at pods[notebook].spec.restartPolicy: "Sometimes" is not one of Always, OnFailure, Never'
    ) in message
    assert "and 1 more problem(s)" in message
    assert await owned(kube, namespace, "jovyan") == ([], [])
