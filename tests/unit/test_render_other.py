"""Rendering otherResources items and item conditions (pure: no cluster)."""

from __future__ import annotations

import pytest

from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.render import condition_holds, render


def template(**spec) -> dict:
    return {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookTemplate",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": spec,
    }


def instance(**variables: str) -> dict:
    return {
        "metadata": {"name": "inst", "namespace": "ns", "uid": "uid-1"},
        "spec": {"template": {"name": "t"}, "variables": variables},
    }


POD = {"name": "notebook", "spec": {"containers": [{"name": "c", "image": "x"}]}}
PVC = {"name": "home", "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
CM = {
    "name": "settings",
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "data": {"user": "{user}"},
    "immutable": False,
}


def by_item(rendered) -> dict:
    return {i.item: i for i in rendered.items}


def test_other_items_become_objects_with_their_top_level_fields():
    out = by_item(render(template(otherResources=[CM]), instance(user="ann")))
    manifest = out["settings"].manifest
    assert (manifest["apiVersion"], manifest["kind"]) == ("v1", "ConfigMap")
    assert manifest["data"] == {"user": "ann"}
    assert manifest["immutable"] is False
    assert "spec" not in manifest and "name" not in manifest
    assert manifest["metadata"]["name"] == "inst-settings"
    assert manifest["metadata"]["labels"]["jupyternetes.kadense.io/otherResourceName"] == (
        "settings"
    )


def test_other_items_keep_the_originals_spec_shape():
    svc = {"name": "svc", "apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80}]}}
    manifest = by_item(render(template(otherResources=[svc]), instance()))["svc"].manifest
    assert manifest["spec"] == {"ports": [{"port": 80}]}


def test_apply_order_is_pvcs_then_other_objects_then_pods():
    out = render(template(pods=[POD], otherResources=[CM], pvcs=[PVC]), instance(user="a"))
    assert [i.section for i in out.items] == ["pvcs", "otherResources", "pods"]


def test_other_objects_are_owned_and_deleted_by_default_unless_the_item_says():
    kept = dict(CM, name="kept", ownedByInstance=False, deletionPolicy="Retain")
    out = by_item(render(template(otherResources=[CM, kept]), instance(user="a")))
    assert out["settings"].manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert out["settings"].deletion_policy == "Delete"
    assert "ownerReferences" not in out["kept"].manifest["metadata"]
    assert out["kept"].deletion_policy == "Retain"


def test_the_final_name_of_an_other_item_is_a_variable():
    pod = {
        "name": "notebook",
        "spec": {
            "volumes": [{"name": "s", "configMap": {"name": "{jupyternetes.other.settings}"}}]
        },
    }
    out = by_item(render(template(pods=[pod], otherResources=[CM]), instance(user="a")))
    assert out["notebook"].manifest["spec"]["volumes"][0]["configMap"]["name"] == "inst-settings"


def test_objects_of_different_kinds_may_share_a_name_but_not_of_one_kind():
    svc = {
        "name": "settings-svc",
        "resourceName": "shared",
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {},
    }
    cm = dict(CM, resourceName="shared")
    out = render(template(otherResources=[svc, cm]), instance(user="a"))
    assert {i.manifest["kind"] for i in out.items} == {"Service", "ConfigMap"}
    with pytest.raises(RenderError, match='same ConfigMap name "shared"'):
        render(template(otherResources=[cm, dict(cm, name="other")]), instance(user="a"))


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"name": "x", "kind": "ConfigMap"}, "otherResources[x].apiVersion"),
        ({"name": "x", "apiVersion": "v1"}, "otherResources[x].kind"),
        (
            {"name": "x", "apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
            "otherResources[x].metadata",
        ),
    ],
)
def test_malformed_other_items_are_refused_at_their_path(item, path):
    with pytest.raises(RenderError) as err:
        render(template(otherResources=[item]), instance())
    assert err.value.path == path


@pytest.mark.parametrize(
    ("condition", "variables", "holds"),
    [
        ({"variable": "p", "equals": "gpu"}, {"p": "gpu"}, True),
        ({"variable": "p", "equals": "gpu"}, {"p": "cpu"}, False),
        ({"variable": "p", "equals": "gpu"}, {}, False),
        ({"variable": "p", "notEquals": "gpu"}, {"p": "cpu"}, True),
        ({"variable": "p", "in": ["a", "b"]}, {"p": "b"}, True),
        ({"variable": "p", "notIn": ["a", "b"]}, {"p": "b"}, False),
        ({"variable": "p", "present": True}, {"p": ""}, True),
        ({"variable": "p", "present": False}, {"p": ""}, False),
        ({"variable": "p", "present": True, "notEquals": "off"}, {"p": "off"}, False),
        (None, {}, True),
    ],
)
def test_condition_operators(condition, variables, holds):
    assert condition_holds(condition, variables) is holds


def test_items_whose_condition_is_false_are_not_rendered():
    gpu = {
        "name": "gpu",
        "condition": {"variable": "profile", "equals": "gpu"},
        "spec": {"containers": []},
    }
    standard = render(template(pods=[POD, gpu]), instance(profile="standard"))
    assert {i.item for i in standard.items} == {"notebook"}
    chosen = render(template(pods=[POD, gpu]), instance(profile="gpu"))
    assert {i.item for i in chosen.items} == {"notebook", "gpu"}


@pytest.mark.parametrize("variable", ["profile", "jupyterhub.user.nmae"])
def test_a_condition_on_a_variable_the_instance_does_not_send_is_an_error(variable):
    """A typo must not silently drop the item everywhere (and have garbage collection prune it)."""
    gpu = {"name": "gpu", "condition": {"variable": variable, "equals": "gpu"}, "spec": {}}
    with pytest.raises(RenderError) as err:
        render(template(pods=[POD, gpu]), instance(**{"jupyterhub.user.name": "ann"}))
    assert err.value.path == "pods[gpu].condition.variable"
    assert f'"{variable}", which the instance does not send' in err.value.message
    if variable.startswith("jupyterhub"):
        assert 'did you mean "jupyterhub.user.name"' in err.value.fix


def test_only_present_may_test_an_absent_variable():
    gpu = {"name": "gpu", "condition": {"variable": "profile", "present": False}, "spec": {}}
    assert {i.item for i in render(template(pods=[gpu]), instance()).items} == {"gpu"}


def test_a_condition_on_an_item_name_is_refused_clearly():
    gpu = {"name": "gpu", "condition": {"variable": "jupyternetes.pods.x", "present": True}}
    with pytest.raises(RenderError, match="object names are not known yet"):
        render(template(pods=[dict(gpu, spec={})]), instance())


def test_conditions_can_test_built_in_variables():
    only_ns = dict(
        POD, condition={"variable": "jupyternetes.instance.namespace", "equals": "elsewhere"}
    )
    assert render(template(pods=[only_ns]), instance()).items == ()


def test_a_reference_to_an_item_left_out_by_its_condition_is_an_unknown_variable():
    scratch = dict(PVC, name="scratch", condition={"variable": "profile", "equals": "big"})
    pod = {
        "name": "notebook",
        "spec": {
            "volumes": [
                {"name": "s", "persistentVolumeClaim": {"claimName": "{jupyternetes.pvcs.scratch}"}}
            ]
        },
    }
    with pytest.raises(RenderError, match=r"jupyternetes\.pvcs\.scratch"):
        render(template(pods=[pod], pvcs=[scratch]), instance(profile="small"))


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        ({"equals": "x"}, "needs `variable`"),
        ({"variable": "p"}, "needs an operator"),
        ({"variable": "p", "matches": "x"}, "unknown condition field"),
        ({"variable": "p", "in": "gpu"}, "in must be a list of strings"),
        ({"variable": "p", "equals": 1}, "equals must be a string"),
        ({"variable": "p", "present": "yes"}, "present must be true or false"),
    ],
)
def test_bad_conditions_name_the_item_and_the_problem(condition, words):
    with pytest.raises(RenderError) as err:
        render(template(pods=[dict(POD, condition=condition)]), instance())
    assert words in err.value.message
    assert err.value.path.startswith("pods[notebook].condition")
