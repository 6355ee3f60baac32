"""validate.py and load.py directly: the rules the corpus does not pin down, and property tests
that no input, however odd, makes them raise instead of reporting (no traceback for any input)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from validation_cases import SEED_INSTANCE, SEED_TEMPLATE

from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.load import LoadError, load_documents
from jupyternetes_ssa.schema import did_you_mean
from jupyternetes_ssa.validate import (
    check_instance,
    check_pair,
    template_problems,
    validated_render,
)
from jupyternetes_ssa.validate_files import validate_files


def seed() -> tuple[dict, dict]:
    return copy.deepcopy(SEED_TEMPLATE), copy.deepcopy(SEED_INSTANCE)


def texts(problems) -> list[str]:
    return [str(p) for p in problems]


# --- rules -----------------------------------------------------------------------------------


def test_did_you_mean_lists_few_valid_words_and_points_to_kubectl_for_many():
    assert (
        did_you_mean("lables", ["labels", "name"]) == 'did you mean "labels"? Valid: labels, name'
    )
    many = [f"field{i}" for i in range(30)]
    assert did_you_mean("zzz", many) == "see kubectl explain"


def test_placeholders_are_not_judged_without_an_instance():
    """`{port}` in a label value or a quantity is checked once an instance gives it a value."""
    template, _ = seed()
    template["spec"]["pods"][0]["labels"]["team"] = "{team}"
    template["spec"]["pvcs"][0]["spec"]["resources"]["requests"]["storage"] = "{size}"

    problems, notes = template_problems(template, "t")

    assert (problems, notes) == ([], [])


def test_a_placeholder_that_renders_a_valid_value_passes_with_the_instance():
    template, instance = seed()
    template["spec"]["pvcs"][0]["spec"]["resources"]["requests"]["storage"] = "{size}"
    instance["spec"]["variables"]["size"] = "10Gi"

    rendered, problems, _ = check_pair(template, instance)

    assert problems == []
    assert rendered is not None
    assert rendered.items[0].manifest["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_a_custom_resource_is_a_note_not_an_error():
    template, instance = seed()
    template["spec"]["otherResources"] = [
        {"name": "cert", "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "spec": {}}
    ]

    rendered, problems, notes = check_pair(template, instance, template_origin="t.yaml")

    assert problems == []
    assert rendered is not None
    assert notes == [
        "t.yaml: JupyterNotebookTemplate kadense/default-template at otherResources[cert]: "
        "Certificate (cert-manager.io/v1) has no schema offline (a custom resource?): it is "
        "checked only in the cluster"
    ]


def test_every_problem_of_a_template_is_reported_not_only_the_first():
    template, _ = seed()
    pod = template["spec"]["pods"][0]
    pod["lables"] = pod.pop("labels")
    pod["spec"]["containers"][0]["imagePullPolice"] = "Always"
    template["spec"]["pvcs"][0]["deletionPolicy"] = "Keep"

    problems, _ = template_problems(template, "t")

    assert sorted(p.path for p in problems) == [
        "pods[notebook].lables",
        "pods[notebook].spec.containers[0].imagePullPolice",
        "pvcs[workspace].deletionPolicy",
    ]


def test_validated_render_raises_the_first_problem_and_counts_the_rest():
    template, instance = seed()
    container = template["spec"]["pods"][0]["spec"]["containers"][0]
    container["imagePullPolice"] = "Always"
    container["resources"] = {"limit": {}}

    with pytest.raises(RenderError) as info:
        validated_render(template, instance)

    assert info.value.reason == "RenderFailed"
    assert info.value.subject == "JupyterNotebookTemplate kadense/default-template"
    assert info.value.message.endswith("(and 1 more problem(s))")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("labels", "R&D / Compilers", "not a valid label value"),
        ("memory", "4 GB", "not a quantity"),
    ],
)
def test_validated_render_checks_what_the_variables_rendered(field: str, value: str, words: str):
    template, instance = seed()
    if field == "labels":
        template["spec"]["pods"][0]["labels"]["dept"] = "{v}"
    else:
        template["spec"]["pods"][0]["spec"]["containers"][0]["resources"] = {
            "limits": {"memory": "{v}"}
        }
    instance["spec"]["variables"]["v"] = value

    with pytest.raises(RenderError, match=words) as info:
        validated_render(template, instance)

    assert info.value.subject == "JupyterNotebookInstance default/8dc366d8a0f05869bfdb6e7eb3d83f65"


def test_an_instance_for_which_no_item_holds_gets_a_note():
    template, instance = seed()
    instance["spec"]["variables"]["profile"] = "standard"
    for section in ("pods", "pvcs"):
        template["spec"][section][0]["condition"] = {"variable": "profile", "equals": "gpu"}

    rendered, problems, notes = check_pair(template, instance, instance_origin="i.yaml")

    assert problems == []
    assert rendered is not None and rendered.items == ()
    assert notes == [
        "i.yaml: JupyterNotebookInstance default/8dc366d8a0f05869bfdb6e7eb3d83f65: no item's "
        "condition holds, so the instance gets nothing"
    ]


def test_validated_render_of_a_clean_pair_is_render():
    from jupyternetes_ssa.render import render

    template, instance = seed()

    checked, plain = validated_render(template, instance), render(template, instance)
    assert [i.manifest for i in checked.items] == [i.manifest for i in plain.items]
    assert all(i.fields_known for i in checked.items)  # every field name was judged
    assert not any(i.fields_known for i in plain.items)  # render alone vouches for nothing


def test_a_field_name_from_a_placeholder_is_not_known_but_a_label_key_is():
    template, instance = seed()
    template["spec"]["pods"][0]["labels"] = {"{jupyterhub.user.name}": "yes"}
    assert all(i.fields_known for i in validated_render(template, instance).items)
    template["spec"]["pods"][0]["spec"]["{jupyterhub.user.name}"] = "x"
    assert not any(i.fields_known for i in validated_render(template, instance).items)


def test_a_template_from_the_cluster_is_checked_once_per_resource_version():
    template, instance = seed()
    template["metadata"]["resourceVersion"] = "41"
    container = template["spec"]["pods"][0]["spec"]["containers"][0]
    container["imagePullPolice"] = "Always"
    first = check_pair(template, instance)[1]
    container.pop("imagePullPolice")  # an edit without a new resourceVersion is not re-checked

    assert check_pair(template, instance)[1] == first
    template["metadata"]["resourceVersion"] = "42"
    assert check_pair(template, instance)[1] == []


@pytest.mark.parametrize("where", ["template", "instance"])
def test_an_object_nested_5000_deep_is_reported_without_recursing(where: str):
    """Objects from the apiserver skip the loader's depth bound: the layer has its own."""
    template, instance = seed()
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    if where == "template":
        template["spec"]["pods"][0]["spec"]["affinity"] = deep
    else:
        instance["spec"]["variables"] = deep

    rendered, problems, _ = check_pair(template, instance)

    assert rendered is None
    assert "nested deeper than 64 levels" in texts(problems)[0]


def test_an_instance_may_carry_status_and_server_fields():
    _, instance = seed()
    instance["metadata"].update(uid="u", resourceVersion="1", managedFields=[])

    assert check_instance(instance, "i") == []


def test_merge_keys_are_allowed_and_merged(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text("base: &b {x: '1'}\nuse:\n  <<: *b\n  y: '2'\n")

    assert load_documents(path) == [{"base": {"x": "1"}, "use": {"x": "1", "y": "2"}}]


def test_a_lone_surrogate_escape_is_refused(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text('x: "\\ud800"\n')

    with pytest.raises(LoadError, match="surrogate"):
        load_documents(path)


# --- no input makes the layer raise ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip


def paths_of(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths_of(value, (*prefix, index))


SEED_PATHS = [p for p in paths_of(SEED_TEMPLATE) if p]
INSTANCE_PATHS = [p for p in paths_of(SEED_INSTANCE) if p]


def replace_at(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(SEED_PATHS),
    value=json_values,
    inst_where=st.sampled_from(INSTANCE_PATHS),
    inst_value=json_values,
    touch_instance=st.booleans(),
)
def test_any_value_anywhere_is_reported_never_raised(
    where, value, inst_where, inst_value, touch_instance
):
    template = replace_at(SEED_TEMPLATE, where, value)
    instance = SEED_INSTANCE
    if touch_instance:
        instance = replace_at(SEED_INSTANCE, inst_where, inst_value)

    rendered, problems, _ = check_pair(template, instance)

    assert (rendered is None) == bool(problems)
    for problem in problems:
        assert problem.subject and str(problem)
    if rendered is not None:
        json.dumps([i.manifest for i in rendered.items], allow_nan=False)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(text=st.text(alphabet=st.sampled_from(list("ab: -[]{}&*!|>'\"\n#1.?,%@`\\\t")),
                    max_size=120))  # fmt: skip
def test_any_text_file_is_read_or_refused_with_its_name(tmp_path: Path, text: str):
    path = tmp_path / "any.yaml"
    path.write_text(text)

    report = validate_files([path])

    for file, problem in report.problems:
        assert file == str(path)
        assert str(problem).startswith(str(path))


def test_yaml_the_seed_dumps_round_trips_through_the_loader(tmp_path: Path):
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump_all([SEED_TEMPLATE, SEED_INSTANCE]))

    assert load_documents(path) == [SEED_TEMPLATE, SEED_INSTANCE]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"),
    ],
)
def test_custom_resources_in_k8s_io_groups_are_left_to_the_cluster(api_version, kind):
    """Gateway API and snapshots are CRDs, though their groups end in k8s.io."""
    from jupyternetes_ssa.schema import check_objects

    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {}}
    problems, notes = check_objects([("otherResources[x]", obj)], "t.yaml")
    assert not problems
    assert any("checked only in the cluster" in n for n in notes)


def test_a_kind_missing_from_a_served_group_is_still_a_typo():
    from jupyternetes_ssa.schema import check_objects

    obj = {"apiVersion": "v1", "kind": "ConfigMapp", "metadata": {"name": "x"}}
    problems, _ = check_objects([("otherResources[x]", obj)], "t.yaml")
    assert problems and "ConfigMap" in str(problems[0])


def test_a_typo_in_a_patch_shows_without_an_instance_that_selects_it():
    template, _ = seed()
    template["spec"]["pods"][0]["patches"] = [
        {
            "condition": {"variable": "profile", "equals": "gpu"},
            "merge": {"spec": {"nodeselector": {"gpu": "true"}}},
        }
    ]
    problems, _ = template_problems(template, "t.yaml")
    assert any("nodeselector" in str(p) and "patches[0]" in str(p) for p in problems), problems


@pytest.mark.parametrize("text", ["a: y\n", "a: N\n", "cpu: 1:20\n"])
def test_scalars_kubectl_reads_otherwise_are_refused(tmp_path: Path, text: str):
    from jupyternetes_ssa.load import LoadError, load_documents

    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(LoadError, match="reads differently in kubectl"):
        load_documents(path)
    path.write_text(text.replace(": ", ': "', 1).rstrip("\n") + '"\n')  # quoted: fine
    assert load_documents(path)


def test_a_named_pipe_is_refused_not_waited_on(tmp_path: Path):
    import os

    from jupyternetes_ssa.load import LoadError, load_documents

    fifo = tmp_path / "t.yaml"
    os.mkfifo(fifo)
    with pytest.raises(LoadError, match="named pipe"):
        load_documents(fifo)
