"""adv9: hostile review of fieldValidation=Ignore (apply.validation). The promise: an unknown
field is refused with its name, never silently dropped. Each test writes a template whose pod
carries a field Kubernetes does not know, runs one pass, and asks: was the start refused with
the field named (the promise), or was the pod created without it (silently dropped)?

Found: two ways past the offline check (see tests/unit/test_adv9_offline_gaps.py), both applied
with Ignore; on 1.36 the apiserver still refuses them, because a server-side apply patch is
converted to its typed schema, which fails on an undeclared field whatever fieldValidation says.
These tests pin that last line of defence."""

from __future__ import annotations

import pytest
from reconcile_helpers import apply_validations, once, put, result_for, seed_instance, seed_template

from jupyternetes_ssa.kube import POD
from jupyternetes_ssa.schema import MINOR

pytestmark = pytest.mark.integration


async def _refused_or_kept(cluster, namespace: str, template: dict, field: str, **variables):
    """One pass for instance "u": (error, live pod). The promise holds when the error names
    `field` and no pod was made, or the pod was made with the field."""
    kube = cluster.kube
    await put(kube, template)
    await put(kube, seed_instance(namespace, "u", **variables))
    result = result_for(await once(kube, namespace), "u")
    return result.error or "", await kube.get(POD, namespace, "u-notebook")


def _assert_not_dropped(error: str, pod: dict | None, field: str, where: list[str]) -> None:
    if pod is None:
        assert field in error, f"refused, but without naming {field!r}: {error}"
        return
    node = pod
    for step in where:
        node = node.get(step) if isinstance(node, dict) else None
    assert isinstance(node, dict) and field in node, (
        f"{field!r} silently dropped: the pod was created without it, no error ({error!r})"
    )


async def test_a_field_name_with_a_nul_character_is_not_silently_dropped(cluster, namespace):
    """A field name holding NUL (the schema walk's placeholder PROBE) was once not judged
    offline, and applied with Ignore; now the template is refused before any request, with
    the field named (tests/unit/test_adv9_offline_gaps.py)."""
    template = seed_template(namespace)
    template["spec"]["pods"][0]["spec"]["hostnamee\x00"] = "h"  # a typo an editor may carry
    error, pod = await _refused_or_kept(cluster, namespace, template, "hostnamee")
    assert pod is None and 'key "hostnamee\\u0000": holds a NUL character' in error, error
    assert "pods" not in apply_validations(cluster, namespace)  # refused before any request


async def test_a_patch_skipped_by_the_offline_check_cannot_smuggle_a_field(cluster, namespace):
    """Patches, in order: (1) securityContext null, (2) securityContext "x" (conflicts with the
    bare item's map, so the offline check skips this patch) plus an unknown field, (3)
    securityContext null again. Rendered: a valid pod plus `hostnamee`, once never judged
    offline and applied with Ignore; now every patch in order is judged too, and the template
    is refused before any request, with the field named."""
    template = seed_template(namespace)
    item = template["spec"]["pods"][0]
    item["spec"]["securityContext"] = {"runAsUser": 1000}
    item["patches"] = [
        {"merge": {"spec": {"securityContext": None}}},
        {"merge": {"spec": {"securityContext": "x", "hostnamee": "h"}}},
        {"merge": {"spec": {"securityContext": None}}},
    ]
    error, pod = await _refused_or_kept(cluster, namespace, template, "hostnamee")
    _assert_not_dropped(error, pod, "hostnamee", ["spec"])
    assert "pods" not in apply_validations(cluster, namespace)  # refused before any request


# --- attacks that held: regressions would show here ---------------------------------------


async def test_a_placeholder_key_inside_a_patch_keeps_the_apply_strict(cluster, namespace):
    """A field name decided by a variable inside a conditional patch: strict, and refused."""
    template = seed_template(namespace)
    template["spec"]["pods"][0]["patches"] = [
        {"condition": {"variable": "f", "present": True}, "merge": {"spec": {"{f}": "x"}}}
    ]
    error, pod = await _refused_or_kept(cluster, namespace, template, "notAField", f="notAField")
    assert pod is None and "notAField" in error, error
    assert apply_validations(cluster, namespace)["pods"] == {"Strict"}


async def test_a_placeholder_key_in_a_list_of_maps_keeps_the_apply_strict(cluster, namespace):
    """Deep in a list (a container's securityContext) a key named by a variable: strict."""
    template = seed_template(namespace)
    container = template["spec"]["pods"][0]["spec"]["containers"][0]
    container["securityContext"] = {"{f}": True}
    error, pod = await _refused_or_kept(
        cluster, namespace, template, "privilegedd", f="privilegedd"
    )
    assert pod is None and "privilegedd" in error, error
    assert apply_validations(cluster, namespace)["pods"] == {"Strict"}


async def test_a_placeholder_key_named_labels_inside_the_spec_keeps_the_apply_strict(
    cluster, namespace
):
    """placeholder_key skips maps under keys named labels/annotations: a pod-spec key named
    "labels" is no metadata; its unknown field is refused by the offline check itself."""
    template = seed_template(namespace)
    template["spec"]["pods"][0]["spec"]["labels"] = {"{f}": "x"}
    kube = cluster.kube
    await put(kube, template)
    await put(kube, seed_instance(namespace, "u", f="k"))
    result = result_for(await once(kube, namespace), "u")
    assert "labels" in (result.error or ""), result.error
    assert await kube.get(POD, namespace, "u-notebook") is None


async def test_variables_in_label_keys_and_map_values_keep_ignore_and_lose_nothing(
    cluster, namespace
):
    """Label keys, nodeSelector and resources are maps of values: a placeholder there names no
    field. Ignore is kept, and every rendered key reaches the pod."""
    template = seed_template(namespace)
    item = template["spec"]["pods"][0]
    item["labels"] = {"team-{team}": "yes"}
    item["annotations"] = {"example.com/{team}": "{team}"}
    container = item["spec"]["containers"][0]
    container.setdefault("resources", {}).setdefault("limits", {})["memory"] = "{mem}"
    error, pod = await _refused_or_kept(cluster, namespace, template, "", team="red", mem="1Gi")
    assert not error and pod is not None, error
    assert pod["metadata"]["labels"]["team-red"] == "yes"
    assert pod["metadata"]["annotations"]["example.com/red"] == "red"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
    assert apply_validations(cluster, namespace)["pods"] == {"Ignore"}


async def test_a_typo_in_an_other_resource_of_a_core_kind_is_refused_offline(cluster, namespace):
    """A ConfigMap in otherResources with a misspelt top-level field: the offline check
    refuses it (by name) before any request, so Ignore never sees it."""
    template = seed_template(namespace)
    template["spec"]["otherResources"] = [
        {
            "name": "cfg",
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "data": {"a": "b"},
            "immutible": True,
        }
    ]
    kube = cluster.kube
    await put(kube, template)
    await put(kube, seed_instance(namespace, "u"))
    result = result_for(await once(kube, namespace, allow_kinds=("ConfigMap",)), "u")
    assert "immutible" in (result.error or ""), result.error


async def test_a_failing_version_endpoint_keeps_every_apply_strict(cluster, namespace):
    """/version answering 503 (FAULT INJECTION: the apiserver cannot be asked for it): the
    minor is unknown, so nothing is applied with Ignore, and the start still succeeds."""
    from faults import FlakyApi

    from jupyternetes_ssa.kube import Kube

    class VersionFails(FlakyApi):  # /version is asked with base="/version" and no url
        def _hit(self, kwargs: dict) -> bool:
            return bool(self.statuses) and kwargs.get("base") == "/version"

    flaky = VersionFails(cluster.api, [503] * 1000)
    kube = Kube(flaky)
    await put(cluster.kube, seed_template(namespace))
    await put(cluster.kube, seed_instance(namespace, "u"))
    result = result_for(await once(kube, namespace), "u")
    assert not result.error, result.error
    assert flaky.injected, "the fault never hit /version: the test did not test it"
    assert await kube.server_minor() != MINOR
    seen = apply_validations(cluster, namespace)
    assert seen["pods"] == {"Strict"} and seen["persistentvolumeclaims"] == {"Strict"}, seen


async def test_a_template_edited_between_passes_is_judged_again(cluster, namespace):
    """The offline verdict is cached per template resourceVersion: an edit that adds a field
    named by a variable is judged again (strict, refused by name), not served from the clean
    version's cache."""
    kube = cluster.kube
    template = seed_template(namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "u"))
    assert not result_for(await once(kube, namespace), "u").error
    assert apply_validations(cluster, namespace)["pods"] == {"Ignore"}

    template["spec"]["pods"][0]["spec"]["{f}"] = "x"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "w", f="notAPodField"))
    result = result_for(await once(kube, namespace), "w")
    assert "notAPodField" in (result.error or ""), result.error
    assert await kube.get(POD, namespace, "w-notebook") is None
    assert "Strict" in apply_validations(cluster, namespace)["pods"]
