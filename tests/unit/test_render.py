"""render() and select_template(): one test or more per rule of the rendering spec."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jupyternetes_ssa import labels
from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.names import is_dns_label, is_label_value, safe_label_value, safe_name
from jupyternetes_ssa.render import expand, render, select_template
from jupyternetes_ssa.shard import BUCKETS, shard_of
from jupyternetes_ssa.types import ObjectRef

SUBJECT = "JupyterNotebookInstance user-ns/inst"


def item(name: str = "notebook", spec: dict | None = None, **extra: Any) -> dict:
    return {"name": name, "spec": spec if spec is not None else {"containers": []}, **extra}


def template(
    pods: list | None = None,
    pvcs: list | None = None,
    name: str = "tmpl",
    namespace: str | None = "tmpl-ns",
) -> dict:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    spec: dict = {}
    if pods is not None:
        spec["pods"] = pods
    if pvcs is not None:
        spec["pvcs"] = pvcs
    return {"apiVersion": "kadense.io/v1", "kind": "JupyterNotebookTemplate", "metadata": meta,
            "spec": spec}  # fmt: skip


def instance(
    variables: dict | None = None,
    name: str = "inst",
    namespace: str = "user-ns",
    uid: str | None = "uid-1",
    template_name: str = "tmpl",
    template_namespace: str | None = None,
) -> dict:
    meta = {"name": name, "namespace": namespace} | ({"uid": uid} if uid else {})
    ref = {"name": template_name} | (
        {"namespace": template_namespace} if template_namespace else {}
    )
    return {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookInstance",
        "metadata": meta,
        "spec": {"template": ref, "variables": variables if variables is not None else {}},
    }


def pod_spec(value: Any) -> dict:
    return {"containers": [{"name": "c", "image": "img", "env": [{"name": "E", "value": value}]}]}


def env_value(rendered, index: int = -1) -> Any:
    return rendered.items[index].manifest["spec"]["containers"][0]["env"][0]["value"]


def render_value(value: Any, variables: dict | None = None) -> Any:
    """Render one env value inside a pod and return what it became."""
    return env_value(render(template(pods=[item(spec=pod_spec(value))]), instance(variables)))


def render_error(tmpl: dict, inst: dict | None = None) -> RenderError:
    with pytest.raises(RenderError) as info:
        render(tmpl, inst if inst is not None else instance())
    return info.value


# --- placeholders ----------------------------------------------------------------------------


def test_placeholders_replaced_in_nested_strings():
    spec = {"containers": [{"name": "{a}", "args": ["x", "--user={a}", ["{b}-{a}"]]}]}
    out = render(template(pods=[item(spec=spec)]), instance({"a": "A", "b": "B"}))
    container = out.items[0].manifest["spec"]["containers"][0]
    assert container == {"name": "A", "args": ["x", "--user=A", ["B-A"]]}


def test_placeholders_replaced_in_map_keys_labels_annotations_and_resource_name():
    spec = {"nodeSelector": {"{key}": "{value}", "plain": "x"}, "containers": []}
    pod = item(
        spec=spec,
        labels={"team/{key}": "{value}"},
        annotations={"{key}": "by-{value}"},
        resourceName="srv-{value}",
    )
    out = render(template(pods=[pod]), instance({"key": "pool", "value": "gpu"}))
    manifest = out.items[0].manifest
    assert manifest["spec"]["nodeSelector"] == {"pool": "gpu", "plain": "x"}
    assert manifest["metadata"]["labels"]["team/pool"] == "gpu"
    assert manifest["metadata"]["annotations"] == {"pool": "by-gpu"}
    assert manifest["metadata"]["name"] == "srv-gpu"


def test_double_braces_are_literal():
    assert render_value("echo ${{HOME}}") == "echo ${HOME}"
    assert render_value("{{not.a.variable}}") == "{not.a.variable}"
    assert render_value("{{{a}}}", {"a": "v"}) == "{v}"
    assert render_value('{{"json": "{a}"}}', {"a": "v"}) == '{"json": "v"}'


@pytest.mark.parametrize(
    "text", ["a { b", "a } b", "{", "}", "{}", "{a b}", '{"k": 1}', "{a", "{a}}", "{{a}"]
)
def test_stray_braces_are_errors_that_say_how_to_escape(text):
    err = render_error(template(pods=[item(spec=pod_spec(text))]), instance({"a": "v"}))
    assert err.path == "pods[notebook].spec.containers[0].env[0].value"
    assert "unmatched" in err.message
    assert "{{" in err.fix and "}}" in err.fix
    assert err.subject == SUBJECT


def test_unescaped_shell_variable_is_an_unknown_variable_with_escape_hint():
    err = render_error(template(pods=[item(spec=pod_spec("echo ${HOME}"))]))
    assert err.message == 'unknown variable "HOME"'
    assert "{{...}}" in err.fix


@pytest.mark.parametrize(
    "value",
    ["{b}", "}{", "{{", 'say "hi"', "line1\nline2", "key: [1, {a: b}]\n- x", "# comment", ""],
)
def test_values_inserted_verbatim_and_never_rescanned(value):
    assert render_value("<{a}>", {"a": value, "b": "SHOULD-NOT-APPEAR"}) == f"<{value}>"


@pytest.mark.parametrize("scalar", [1, 0, 3.5, True, False, None])
def test_non_string_scalars_pass_through(scalar):
    assert render_value(scalar) is scalar or render_value(scalar) == scalar
    assert type(render_value(scalar)) is type(scalar)


def test_lookup_is_case_sensitive():
    err = render_error(template(pods=[item(spec=pod_spec("{User}"))]), instance({"user": "u"}))
    assert '"User"' in err.message
    assert 'did you mean "user"' in err.fix


def test_expand_is_usable_on_its_own():
    assert expand("a{x}b{{c}}", {"x": "1"}) == "a1b{c}"


# --- built-ins -------------------------------------------------------------------------------


def test_instance_and_template_builtins():
    text = (
        "{jupyternetes.instance.name}/{jupyternetes.instance.namespace}/"
        "{jupyternetes.template.name}/{jupyternetes.template.namespace}"
    )
    assert render_value(text) == "inst/user-ns/tmpl/tmpl-ns"


@pytest.mark.parametrize(
    ("doc_ns", "ref_ns", "expected"),
    [("doc-ns", "ref-ns", "doc-ns"), (None, "ref-ns", "ref-ns"), (None, None, "user-ns")],
)
def test_template_namespace_fallbacks(doc_ns, ref_ns, expected):
    pod = item(spec=pod_spec("{jupyternetes.template.namespace}"))
    out = render(template(pods=[pod], namespace=doc_ns), instance(template_namespace=ref_ns))
    assert env_value(out) == expected
    assert out.template == ObjectRef("JupyterNotebookTemplate", expected, "tmpl")
    assert out.items[0].manifest["metadata"]["labels"][labels.TEMPLATE_NAMESPACE] == expected


def test_item_builtins_are_final_object_names():
    pvcs = [item("home", {}, resourceName="home-{user}"), item("scratch", {})]
    value = "{jupyternetes.pvcs.home} {jupyternetes.pvcs.scratch} {jupyternetes.pods.notebook}"
    out = render(template(pods=[item(spec=pod_spec(value))], pvcs=pvcs), instance({"user": "Al"}))
    names = [i.name for i in out.items]
    assert names == [safe_name("home-Al"), "inst-scratch", "inst-notebook"]
    assert env_value(out) == " ".join(names)


def test_instance_may_repeat_a_builtin_with_the_same_value():
    variables = {"jupyternetes.instance.name": "inst", "jupyternetes.instance.namespace": "user-ns"}
    assert render_value("{jupyternetes.instance.name}", variables) == "inst"


@pytest.mark.parametrize(
    "name",
    [
        "jupyternetes.instance.name",
        "jupyternetes.instance.namespace",
        "jupyternetes.template.name",
        "jupyternetes.template.namespace",
        "jupyternetes.pods.notebook",
    ],
)
def test_instance_may_not_override_a_builtin(name):
    err = render_error(template(pods=[item()]), instance({name: "evil"}))
    assert err.path == f'spec.variables["{name}"]'
    assert err.subject == SUBJECT
    assert "built-in" in err.message


def test_instance_may_repeat_item_builtin_with_the_same_value():
    variables = {"jupyternetes.pods.notebook": "inst-notebook"}
    assert render_value("{jupyternetes.pods.notebook}", variables) == "inst-notebook"


def test_reserved_item_variable_naming_no_item_is_refused():
    err = render_error(template(pods=[item()]), instance({"jupyternetes.pvcs.ghost": "x"}))
    assert err.path == 'spec.variables["jupyternetes.pvcs.ghost"]'


# --- unknown variables and error paths -------------------------------------------------------


def test_unknown_variable_names_variable_item_and_field_path():
    env = [{"name": f"E{i}", "value": "ok"} for i in range(3)] + [{"name": "X", "value": "{nope}"}]
    spec = {"containers": [{"name": "c", "env": env}]}
    err = render_error(template(pods=[item(spec=spec)]))
    assert err.message == 'unknown variable "nope"'
    assert err.path == "pods[notebook].spec.containers[0].env[3].value"
    assert err.subject == SUBJECT
    assert "add it to the instance's spec.variables, or write {{...}} for literal braces" in err.fix
    assert "pods[notebook].spec.containers[0].env[3].value" in str(err)


def test_unknown_item_builtin_says_no_such_item():
    err = render_error(template(pods=[item(spec=pod_spec("{jupyternetes.pvcs.home}"))]))
    assert "no pvcs item named 'home'" in err.fix


def test_path_quotes_non_identifier_keys():
    err = render_error(template(pods=[item(labels={"my/key": "{nope}"})]))
    assert err.path == 'pods[notebook].labels["my/key"]'


def test_path_names_a_key_itself():
    err = render_error(template(pvcs=[item("home", {}, annotations={"{nope}/x": "v"})]))
    assert err.path == 'pvcs[home].annotations key "{nope}/x"'
    assert '"nope"' in err.message


def test_unknown_variable_in_resource_name():
    err = render_error(template(pods=[item(resourceName="srv-{nope}")]))
    assert err.path == "pods[notebook].resourceName"


def test_rendering_is_all_or_nothing():
    pods = [item("good", pod_spec("fine")), item("bad", pod_spec("{nope}"))]
    err = render_error(template(pods=pods, pvcs=[item("home", {})]))
    assert err.path.startswith("pods[bad]")


def test_two_keys_rendering_to_the_same_key_is_an_error():
    spec = {"nodeSelector": {"{a}": "1", "{b}": "2"}, "containers": []}
    err = render_error(template(pods=[item(spec=spec)]), instance({"a": "same", "b": "same"}))
    assert err.path == "pods[notebook].spec.nodeSelector"
    assert '"same"' in err.message


def test_placeholder_key_colliding_with_literal_key_is_an_error():
    err = render_error(
        template(pods=[item(labels={"tier": "x", "{k}": "y"})]), instance({"k": "tier"})
    )
    assert err.path == "pods[notebook].labels"


# --- names -----------------------------------------------------------------------------------


def test_default_name_is_instance_dash_item():
    out = render(template(pods=[item()], pvcs=[item("workspace", {})]), instance())
    assert [i.name for i in out.items] == ["inst-workspace", "inst-notebook"]


def test_resource_name_pattern_overrides_default():
    out = render(template(pvcs=[item("home", {}, resourceName="home-{u}")]), instance({"u": "bob"}))
    assert out.items[0].name == "home-bob"


def test_invalid_rendered_name_is_slugged_deterministically():
    tmpl = template(pvcs=[item("home", {}, resourceName="home-{u}")])
    first = render(tmpl, instance({"u": "Alice.Smith@Example.org"})).items[0].name
    again = render(tmpl, instance({"u": "Alice.Smith@Example.org"})).items[0].name
    other = render(tmpl, instance({"u": "alice.smith@example.org"})).items[0].name
    assert first == again == safe_name("home-Alice.Smith@Example.org")
    assert is_dns_label(first) and first.startswith("home-alice-smith-example-org---")
    assert other != first


def test_long_default_name_is_slugged():
    out = render(template(pods=[item()]), instance(name="i" * 60))
    assert is_dns_label(out.items[0].name)
    assert out.items[0].name == safe_name("i" * 60 + "-notebook")


def test_resource_name_may_not_use_item_builtins():
    pods = [item(resourceName="{jupyternetes.pvcs.home}-pod")]
    err = render_error(template(pods=pods, pvcs=[item("home", {})]))
    assert err.path == "pods[notebook].resourceName"
    assert "jupyternetes.pvcs.home" in err.message


def test_two_items_with_the_same_object_name_is_an_error():
    pvcs = [item("a", {}, resourceName="shared"), item("b", {}, resourceName="shared")]
    err = render_error(template(pvcs=pvcs))
    assert err.path == "pvcs[b].resourceName"
    assert "pvcs[a]" in err.message


def test_resource_name_colliding_with_a_default_name_is_an_error():
    pods = [item("notebook"), item("other", resourceName="inst-notebook")]
    err = render_error(template(pods=pods))
    assert err.path == "pods[other].resourceName"
    assert "pods[notebook]" in err.message


def test_same_name_across_kinds_is_fine():
    out = render(
        template(pods=[item("x", resourceName="same")], pvcs=[item("y", {}, resourceName="same")]),
        instance(),
    )
    assert [i.ref.kind for i in out.items] == ["PersistentVolumeClaim", "Pod"]


# --- manifests -------------------------------------------------------------------------------


def test_manifest_envelope_and_our_labels():
    out = render(template(pods=[item()], pvcs=[item("home", {"accessModes": ["RWO"]})]), instance())
    pvc, pod = (i.manifest for i in out.items)
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pvc["spec"] == {"accessModes": ["RWO"]}
    common = {
        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.INSTANCE: "inst",
        labels.INSTANCE_NAMESPACE: "user-ns",
        labels.TEMPLATE: "tmpl",
        labels.TEMPLATE_NAMESPACE: "tmpl-ns",
        labels.SHARD_BUCKET: str(shard_of("user-ns", "inst", BUCKETS)),
    }
    assert pvc["metadata"]["labels"] == common | {labels.PVC_ITEM: "home"}
    assert pod["metadata"]["labels"] == common | {labels.POD_ITEM: "notebook"}
    assert {m["metadata"]["namespace"] for m in (pvc, pod)} == {"user-ns"}


def test_long_instance_and_template_names_give_valid_label_values():
    long_instance, long_template = "i" * 70, "t." * 60 + "t"
    tmpl = template(pods=[item()], name=long_template)
    out = render(tmpl, instance(name=long_instance, template_name=long_template))
    got = out.items[0].manifest["metadata"]["labels"]
    assert got[labels.INSTANCE] == safe_label_value(long_instance)
    assert got[labels.TEMPLATE] == safe_label_value(long_template)
    assert all(is_label_value(v) for v in got.values())


def test_admin_labels_and_annotations_kept_but_ours_win():
    pod = item(
        labels={"team": "data", labels.MANAGED_BY: "someone-else", labels.POD_ITEM: "fake"},
        annotations={"note": "hi"},
    )
    meta = render(template(pods=[pod]), instance()).items[0].manifest["metadata"]
    assert meta["labels"]["team"] == "data"
    assert meta["labels"][labels.MANAGED_BY] == labels.MANAGED_BY_VALUE
    assert meta["labels"][labels.POD_ITEM] == "notebook"
    assert meta["annotations"] == {"note": "hi"}


def test_no_annotations_of_ours():
    meta = render(template(pods=[item()]), instance()).items[0].manifest["metadata"]
    assert "annotations" not in meta


# --- ownerReferences -------------------------------------------------------------------------

OWNER = {
    "apiVersion": "kadense.io/v1",
    "kind": "JupyterNotebookInstance",
    "name": "inst",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def owners(pod: dict | None = None, pvc: dict | None = None, uid: str | None = "uid-1") -> list:
    tmpl = template(pods=[pod] if pod else None, pvcs=[pvc] if pvc else None)
    return render(tmpl, instance(uid=uid)).items[0].manifest["metadata"].get("ownerReferences")


def test_pods_are_owned_by_the_instance():
    assert owners(pod=item()) == [OWNER]


def test_no_owner_without_uid():
    assert owners(pod=item(), uid=None) is None


def test_pod_can_opt_out_of_ownership():
    assert owners(pod=item(ownedByInstance=False)) is None


def test_pvcs_are_not_owned_by_default():
    assert owners(pvc=item("home", {})) is None


def test_pvc_can_opt_in_to_ownership():
    assert owners(pvc=item("home", {}, ownedByInstance=True)) == [OWNER]


# --- RenderedItem / Rendered -----------------------------------------------------------------


def test_rendered_item_fields_and_order():
    tmpl = template(
        pods=[item("b", recreateOnChange=True), item("a"), item("c", updateStrategy="InPlace")],
        pvcs=[item("z", {}), item("y", {}, deletionPolicy="Delete")],
    )
    out = render(tmpl, instance())
    got = [(i.section, i.item, i.update_strategy, i.deletion_policy) for i in out.items]
    assert got == [
        ("pvcs", "z", "OnRestart", "Retain"),
        ("pvcs", "y", "OnRestart", "Delete"),
        ("pods", "b", "Recreate", "Delete"),
        ("pods", "a", "OnRestart", "Delete"),
        ("pods", "c", "InPlace", "Delete"),
    ]
    assert out.instance == ObjectRef("JupyterNotebookInstance", "user-ns", "inst")
    assert out.template == ObjectRef("JupyterNotebookTemplate", "tmpl-ns", "tmpl")


def test_empty_template_renders_nothing():
    assert render(template(), instance()).items == ()


def test_inputs_are_never_mutated_and_output_does_not_alias_them():
    tmpl = template(
        pods=[item(spec=pod_spec("{a}"), labels={"x": "{a}"})], pvcs=[item("h", {"r": [1]})]
    )
    inst = instance({"a": "v"})
    before = copy.deepcopy((tmpl, inst))
    out = render(tmpl, inst)
    assert (tmpl, inst) == before
    out.items[0].manifest["spec"]["r"].append(2)
    assert tmpl["spec"]["pvcs"][0]["spec"]["r"] == [1]


def test_rendering_is_deterministic():
    tmpl = template(pods=[item(spec=pod_spec("{a}"))], pvcs=[item("h", {}, resourceName="{a}")])
    assert render(tmpl, instance({"a": "X Y"})) == render(tmpl, instance({"a": "X Y"}))


# --- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"name": "Bad_Name", "spec": {}}, "spec.pods[0].name"),
        ({"name": "nospec"}, "pods[nospec].spec"),
        ({"name": "p", "spec": {}, "recreateOnChange": "yes"}, "pods[p].recreateOnChange"),
        ({"name": "p", "spec": {}, "labels": ["x"]}, "pods[p].labels"),
        ({"name": "p", "spec": {}, "resourceName": 5}, "pods[p].resourceName"),
    ],
)
def test_malformed_pod_items_are_errors(bad, path):
    assert render_error(template(pods=[bad])).path == path


def test_bad_deletion_policy_is_an_error():
    err = render_error(template(pvcs=[item("h", {}, deletionPolicy="Keep")]))
    assert err.path == "pvcs[h].deletionPolicy"


def test_duplicate_item_names_are_an_error():
    assert render_error(template(pods=[item(), item()])).path == "spec.pods[1].name"


def test_non_string_variable_is_an_error():
    err = render_error(template(pods=[item()]), instance({"jupyterhub.user.id": 1}))
    assert err.path == 'spec.variables["jupyterhub.user.id"]'


def test_instance_without_namespace_is_an_error():
    inst = instance()
    del inst["metadata"]["namespace"]
    err = render_error(template(pods=[item()]), inst)
    assert err.path == "metadata.namespace"


# --- select_template -------------------------------------------------------------------------


def test_select_template_by_name_and_namespace():
    wanted = template(name="tmpl", namespace="tmpl-ns")
    docs = [template(name="other"), template(name="tmpl", namespace="elsewhere"), wanted]
    assert select_template(docs, instance(template_namespace="tmpl-ns")) is wanted


def test_select_template_defaults_to_instance_namespace():
    wanted = template(namespace="user-ns")
    assert select_template([template(), wanted], instance()) is wanted


def test_select_template_accepts_a_doc_without_namespace():
    loose = template(namespace=None)
    assert select_template([loose], instance(template_namespace="anything")) is loose


def test_select_template_ignores_other_kinds():
    not_a_template = instance(name="tmpl")
    wanted = template(namespace="user-ns")
    assert select_template([not_a_template, wanted], instance()) is wanted


def test_select_template_missing_names_instance_and_field():
    with pytest.raises(RenderError) as info:
        select_template([template(namespace="elsewhere")], instance())
    assert info.value.subject == SUBJECT
    assert info.value.path == "spec.template.name"
    assert '"tmpl"' in info.value.message


def test_select_template_refuses_ambiguity():
    with pytest.raises(RenderError):
        select_template([template(namespace="user-ns"), template(namespace="user-ns")], instance())
