"""The tenancy decision: which namespaces a template serves (pure, no cluster)."""

from __future__ import annotations

import pytest

from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.errors import RenderError, TemplateNotAllowed
from jupyternetes_ssa.observe import template_scope
from jupyternetes_ssa.render import render
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.tenancy import (
    check_grant,
    selector_matches,
    selector_problem,
    template_key,
    uses_selector,
)

TEAM = {"kubernetes.io/metadata.name": "tenant-a", "team": "physics", "tier": "gold"}


def template(namespace: str = "admin-only", **spec) -> dict:
    return {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookTemplate",
        "metadata": {"name": "debug", "namespace": namespace},
        "spec": {"pods": [], **spec},
    }


def refusal(tmpl: dict, namespace: str = "tenant-a", **kw) -> str:
    with pytest.raises(TemplateNotAllowed) as caught:
        check_grant(tmpl, namespace, subject="JupyterNotebookInstance tenant-a/x", **kw)
    assert caught.value.reason == "TemplateNotAllowed"
    return str(caught.value)


def test_a_template_always_serves_its_own_namespace():
    assert check_grant(template("tenant-a"), "tenant-a") == "the template's own namespace"


def test_without_a_grant_another_namespace_is_refused_with_how_to_grant_it():
    text = refusal(template())
    assert text.startswith("JupyterNotebookInstance tenant-a/x at spec.template: ")
    assert "JupyterNotebookTemplate admin-only/debug does not serve namespace 'tenant-a'" in text
    for how in ("spec.instanceNamespaces", "spec.instanceNamespaceSelector", "--catalog-namespace"):
        assert how in text


@pytest.mark.parametrize("names", [["tenant-a"], ["other", "tenant-a"], ["*"]])
def test_instance_namespaces_grant_by_name_or_star(names):
    assert check_grant(template(instanceNamespaces=names), "tenant-a") == "spec.instanceNamespaces"


@pytest.mark.parametrize("names", [[], ["tenant-b"], ["Tenant-A"], ["tenant-a*"], ["tenant"]])
def test_instance_namespaces_match_exactly(names):
    refusal(template(instanceNamespaces=names))


def test_a_catalogue_serves_every_namespace_and_only_its_own_templates():
    assert check_grant(template(), "tenant-a", catalog=("admin-only",)).startswith("--catalog")
    refusal(template(), catalog=("shared",))


def test_a_selector_grants_by_the_namespace_labels():
    selector = {"matchLabels": {"team": "physics"}}
    tmpl = template(instanceNamespaceSelector=selector)
    assert check_grant(tmpl, "tenant-a", namespace_labels=TEAM) == "spec.instanceNamespaceSelector"
    refusal(tmpl, namespace_labels={"team": "chemistry"})
    refusal(tmpl, namespace_labels={})


def test_unknown_namespace_labels_never_match():
    text = refusal(template(instanceNamespaceSelector={}), namespace_labels=None)
    assert "cannot read the labels of namespace 'tenant-a'" in text
    assert "list and watch on namespaces" in text


def test_a_name_grant_needs_no_labels():
    tmpl = template(instanceNamespaces=["tenant-a"], instanceNamespaceSelector={"matchLabels": {}})
    assert check_grant(tmpl, "tenant-a", namespace_labels=None) == "spec.instanceNamespaces"


@pytest.mark.parametrize(
    ("expressions", "matches"),
    [
        ([{"key": "team", "operator": "In", "values": ["physics", "maths"]}], True),
        ([{"key": "team", "operator": "In", "values": ["maths"]}], False),
        ([{"key": "absent", "operator": "In", "values": ["x"]}], False),
        ([{"key": "team", "operator": "NotIn", "values": ["maths"]}], True),
        ([{"key": "team", "operator": "NotIn", "values": ["physics"]}], False),
        ([{"key": "absent", "operator": "NotIn", "values": ["x"]}], True),
        ([{"key": "tier", "operator": "Exists"}], True),
        ([{"key": "absent", "operator": "Exists"}], False),
        ([{"key": "absent", "operator": "DoesNotExist"}], True),
        ([{"key": "tier", "operator": "DoesNotExist"}], False),
        (
            [
                {"key": "tier", "operator": "Exists"},
                {"key": "team", "operator": "In", "values": ["maths"]},
            ],
            False,
        ),
    ],
)
def test_match_expressions_follow_kubernetes(expressions, matches):
    assert selector_matches({"matchExpressions": expressions}, TEAM) is matches


def test_match_labels_and_expressions_must_all_hold():
    selector = {
        "matchLabels": {"team": "physics"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["silver"]}],
    }
    assert not selector_matches(selector, TEAM)
    assert selector_matches({}, TEAM) and selector_matches({}, {})


@pytest.mark.parametrize(
    ("selector", "where"),
    [
        ("team=physics", ": must be a LabelSelector"),
        ({"matchLabels": ["team"]}, ".matchLabels"),
        ({"matchLabels": {"team": 1}}, ".matchLabels"),
        ({"matchExpressions": {"key": "team"}}, ".matchExpressions:"),
        ({"matchExpressions": [{"operator": "Exists"}]}, ".matchExpressions[0]: needs a key"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals"}]},
            ".matchExpressions[0].operator",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In"}]},
            ".matchExpressions[0].values: In needs some",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]},
            ".matchExpressions[0].values",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            ".matchExpressions[0].values: Exists needs no values",
        ),
    ],
)
def test_a_malformed_selector_grants_nothing_and_says_where(selector, where):
    assert where in selector_problem(selector)
    text = refusal(template(instanceNamespaceSelector=selector), namespace_labels=TEAM)
    assert f"spec.instanceNamespaceSelector{where}" in text
    assert "must correct the template's grant" in text


@pytest.mark.parametrize("names", ["tenant-a", [1], {"tenant-a": True}])
def test_malformed_instance_namespaces_grant_nothing(names):
    assert "spec.instanceNamespaces: must be a list" in refusal(template(instanceNamespaces=names))


def test_uses_selector_only_when_one_is_set():
    assert uses_selector(template(instanceNamespaceSelector={}))
    assert not uses_selector(template(instanceNamespaces=["*"]))
    assert not uses_selector({"metadata": {"name": "t"}})


@pytest.mark.parametrize(
    ("instance", "key"),
    [
        ({"metadata": {"namespace": "a"}, "spec": {"template": {"name": "t"}}}, ("a", "t")),
        (
            {"metadata": {"namespace": "a"}, "spec": {"template": {"name": "t", "namespace": "b"}}},
            ("b", "t"),
        ),
        ({"metadata": {"namespace": "a"}, "spec": None}, ("a", "")),
        ({"metadata": [], "spec": {"template": "t"}}, ("", "")),
    ],
)
def test_template_key_defaults_to_the_instances_namespace(instance, key):
    assert template_key(instance) == key


def test_catalogues_are_read_and_allowed_alongside_the_template_namespaces():
    settings = Settings(
        namespaces=("jhub",), template_namespaces=("tmpl",), catalog_namespaces=("shared",)
    )
    assert template_scope(settings) == ("tmpl", "shared")
    assert settings.template_allowed("shared") and settings.template_allowed("tmpl")
    assert not settings.template_allowed("jhub")
    served = Settings(namespaces=("jhub",), catalog_namespaces=("shared", "jhub"))
    assert template_scope(served) == ("jhub", "shared")
    assert template_scope(Settings(catalog_namespaces=("shared",))) == ()
    assert Settings(catalog_namespaces=("shared",)).template_allowed("anywhere")


# --- otherResources: never outside the instance's namespace -----------------------------------

CONFIGMAP = {"name": "cfg", "apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}


def _instance(namespace: str = "tenant-a") -> dict:
    return {
        "metadata": {"name": "x", "namespace": namespace, "uid": "u"},
        "spec": {"template": {"name": "debug", "namespace": "admin-only"}},
    }


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"namespace": "admin-only"}, "otherResources[cfg].namespace"),
        ({"metadata": {"namespace": "admin-only"}}, "otherResources[cfg].metadata"),
    ],
)
def test_an_other_item_cannot_name_a_namespace(extra, path):
    with pytest.raises(RenderError) as caught:
        render(template(otherResources=[{**CONFIGMAP, **extra}]), _instance())
    assert caught.value.path == path
    assert "instance's namespace" in str(caught.value)


def test_every_object_of_a_template_from_elsewhere_lands_in_the_instances_namespace():
    pod = {"name": "nb", "spec": {"containers": [{"name": "c", "image": "i"}]}}
    pvc = {"name": "home", "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
    tmpl = template(pods=[pod], pvcs=[pvc], otherResources=[CONFIGMAP])
    rendered = render(tmpl, _instance())
    assert {i.manifest["metadata"]["namespace"] for i in rendered.items} == {"tenant-a"}
    assert rendered.template.namespace == "admin-only"


# --- continuous mode: which events re-queue which instances -------------------------------------


def _naming(namespace: str, name: str, template_ns: str | None) -> dict:
    ref = {"name": "t"} | ({"namespace": template_ns} if template_ns else {})
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"template": ref}}


def _namespace(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


async def _drain(queue) -> set:
    keys = set()
    while len(queue):
        key = await queue.get()
        queue.done(key)
        keys.add(key)
    return keys


async def test_a_namespace_label_change_requeues_its_cross_namespace_instances_only():
    controller = Controller(None, Settings(health_port=0))  # handlers only: no apiserver
    controller.observed.instances = {
        ("a", "cross"): _naming("a", "cross", "admin"),
        ("a", "own"): _naming("a", "own", None),
        ("a", "own-named"): _naming("a", "own-named", "a"),
        ("b", "cross"): _naming("b", "cross", "admin"),
    }
    controller._on_namespace("MODIFIED", _namespace("a", team="x"), _namespace("a", team="x"))
    assert await _drain(controller.queue) == set(), "labels unchanged: nothing to do"
    controller._on_namespace("MODIFIED", _namespace("a", team="y"), _namespace("a", team="x"))
    assert await _drain(controller.queue) == {("a", "cross")}
    controller._on_namespace("ADDED", _namespace("b"), None)
    assert await _drain(controller.queue) == {("b", "cross")}
