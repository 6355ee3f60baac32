"""Item `patches`: merge rules, conditions, placeholders and errors, plus property tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.patches import merged
from jupyternetes_ssa.render import render

FAST = settings(max_examples=80, deadline=None)


def notebook(**extra: Any) -> dict:
    spec = {
        "containers": [
            {
                "name": "notebook",
                "image": "jupyter/base:1",
                "args": ["--debug"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "resources": {"limits": {"memory": "2Gi"}},
            },
            {"name": "sidecar", "image": "sidecar:1"},
        ],
        "tolerations": [{"key": "pool", "operator": "Exists"}],
    }
    return {"name": "notebook", "labels": {"tier": "std"}, "spec": spec, **extra}


def template(pods: list, other: list | None = None) -> dict:
    spec: dict = {"pods": pods}
    if other is not None:
        spec["otherResources"] = other
    return {"kind": "JupyterNotebookTemplate", "metadata": {"name": "t", "namespace": "ns"},
            "spec": spec}  # fmt: skip


def instance(**variables: str) -> dict:
    return {
        "kind": "JupyterNotebookInstance",
        "metadata": {"name": "inst", "namespace": "ns", "uid": "u1"},
        "spec": {"template": {"name": "t"}, "variables": variables},
    }


def pod(tmpl: dict, **variables: str) -> dict:
    return render(tmpl, instance(**variables)).items[-1].manifest


def error(tmpl: dict, **variables: str) -> RenderError:
    with pytest.raises(RenderError) as info:
        render(tmpl, instance(**variables))
    return info.value


GPU = {
    "condition": {"variable": "profile", "equals": "gpu"},
    "merge": {
        "labels": {"tier": "gpu"},
        "spec": {
            "containers": [
                {"name": "notebook", "resources": {"limits": {"nvidia.com/gpu": "{gpus}"}}}
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "nodeSelector": {"gpu": "true"},
        },
    },
}


def test_a_patch_whose_condition_holds_is_merged_by_the_rules():
    out = pod(template([notebook(patches=[GPU])]), profile="gpu", gpus="2")
    container = out["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"memory": "2Gi", "nvidia.com/gpu": "2"}
    assert container["image"] == "jupyter/base:1"  # untouched fields stay
    assert [c["name"] for c in out["spec"]["containers"]] == ["notebook", "sidecar"]
    assert out["spec"]["tolerations"] == [
        {"key": "pool", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists"},
    ]  # unnamed items: appended
    assert out["spec"]["nodeSelector"] == {"gpu": "true"}
    assert out["metadata"]["labels"]["tier"] == "gpu"  # a scalar replaces


def test_a_patch_whose_condition_fails_changes_nothing():
    plain = pod(template([notebook()]), profile="std", gpus="2")
    assert pod(template([notebook(patches=[GPU])]), profile="std", gpus="2") == plain
    with pytest.raises(RenderError, match="which the instance does not send"):  # a typo
        pod(template([notebook(patches=[GPU])]), gpus="2")


def test_named_items_merge_by_name_and_unknown_names_are_appended():
    patch = {
        "merge": {
            "spec": {
                "containers": [
                    {"name": "notebook", "env": [{"name": "B", "value": "20"}, {"name": "C"}]},
                    {"name": "extra", "image": "extra:1"},
                ]
            }
        }
    }
    out = pod(template([notebook(patches=[patch])]))
    notebook_c, sidecar, extra = out["spec"]["containers"]
    assert notebook_c["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C"},
    ]
    assert notebook_c["args"] == ["--debug"]
    assert sidecar == {"name": "sidecar", "image": "sidecar:1"}
    assert extra == {"name": "extra", "image": "extra:1"}


def test_patches_apply_in_order_and_plain_lists_append():
    first = {
        "merge": {"spec": {"containers": [{"name": "notebook", "image": "one", "args": ["-a"]}]}}
    }
    second = {"merge": {"spec": {"containers": [{"name": "notebook", "image": "two"}]}}}
    container = pod(template([notebook(patches=[first, second])]))["spec"]["containers"][0]
    assert container["image"] == "two"
    assert container["args"] == ["--debug", "-a"]


def test_variable_values_in_a_patch_are_inserted_once_and_never_reparsed():
    patch = {"merge": {"annotations": {"note": "{value}"}}}
    out = pod(template([notebook(patches=[patch])]), value="{gpus} {{x}}")
    assert out["metadata"]["annotations"]["note"] == "{gpus} {{x}}"


def test_other_resources_patch_their_other_fields():
    config = {
        "name": "settings",
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "data": {"theme": "light", "size": "s"},
        "patches": [{"merge": {"data": {"size": "{size}"}}}],
    }
    items = render(template([notebook()], [config]), instance(size="xl")).items
    assert items[0].manifest["data"] == {"theme": "light", "size": "xl"}


def test_the_template_is_never_changed_by_its_patches():
    tmpl = template([notebook(patches=[GPU])])
    before = copy.deepcopy(tmpl)
    pod(tmpl, profile="gpu", gpus="1")
    pod(tmpl, profile="gpu", gpus="4")
    assert tmpl == before


@pytest.mark.parametrize(
    ("patches", "path", "words"),
    [
        ("gpu", "pods[notebook].patches", "must be a list"),
        ([{"condition": GPU["condition"]}], "pods[notebook].patches[0]", "needs `merge`"),
        ([{"merge": {}, "when": 1}], "pods[notebook].patches[0]", "unknown patch field"),
        ([{"merge": {"resourceName": "x"}}], "pods[notebook].patches[0].merge.resourceName", ""),
        ([{"merge": {"updateStrategy": "Recreate"}}], "patches[0].merge.updateStrategy", ""),
        ([{"merge": {"data": {}}}], "pods[notebook].patches[0].merge.data", "cannot set"),
        ([{"merge": {"spec": []}}], "pods[notebook].patches[0].merge.spec", "must be a map"),
        (
            [{"merge": {}}, {"merge": {"spec": {"containers": {"name": "x"}}}}],
            "pods[notebook].patches[1].merge.spec.containers",
            "cannot merge a map into a list",
        ),
        (
            [{"merge": {"spec": {"containers": [{"name": "notebook", "env": "A=1"}]}}}],
            "pods[notebook].patches[0].merge.spec.containers[0].env",
            "scalar (str) into a list",
        ),
        (
            [{"condition": {"variable": "p", "is": "x"}, "merge": {}}],
            "pods[notebook].patches[0].condition",
            "unknown condition field",
        ),
        (
            [{"merge": {"labels": {"team": "{tem}"}}}],
            "pods[notebook].patches[0].merge.labels.team",
            'unknown variable "tem"',
        ),
    ],
)
def test_bad_patches_name_the_item_the_patch_and_the_field(patches, path, words):
    err = error(template([notebook(patches=patches)]), team="a")
    assert err.path.endswith(path), err.path
    assert words in err.message
    assert err.subject == "JupyterNotebookInstance ns/inst"


# --- properties ------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "name", "image", "env", "x"])
SCALARS = st.one_of(st.text("ab -:", max_size=4), st.integers(), st.booleans())
NAMES = st.sampled_from(["n1", "n2", "n3", "n4"])


def named_lists(inner) -> st.SearchStrategy:
    return st.lists(st.fixed_dictionaries({"name": NAMES}, optional={"v": inner}), max_size=4)


TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(KEYS, inner, max_size=3),
        named_lists(inner),
    ),
    max_leaves=10,
)
SPECS = st.dictionaries(KEYS, TREES, max_size=4)


def try_merge(item: dict, merge: dict) -> Any:
    try:
        return merged(item, merge, "pods[p].patches[0]")
    except RenderError as err:
        return ("error", err.path, err.message)


@FAST
@given(SPECS, SPECS)
def test_merging_is_deterministic_and_leaves_its_inputs_alone(base, patch):
    item, merge = {"name": "p", "spec": base}, {"spec": patch}
    before = copy.deepcopy((item, merge))
    assert try_merge(item, merge) == try_merge(copy.deepcopy(item), copy.deepcopy(merge))
    assert (item, merge) == before


@FAST
@given(SPECS, SPECS, st.sampled_from(["other", ""]))
def test_a_patch_whose_condition_is_false_changes_nothing(base, patch, value):
    spec = {"containers": [{"name": "c", "image": "i"}], "extra": base}
    patched = {"name": "p", "spec": spec}
    patched["patches"] = [
        {"condition": {"variable": "flavour", "equals": "gpu"}, "merge": {"spec": patch}}
    ]
    plain = {"name": "p", "spec": spec}
    variables = {"flavour": value or "standard"}  # an unsent variable is an error, not false
    assert (
        render(template([patched]), instance(**variables)).items
        == render(template([plain]), instance(**variables)).items
    )


def unique_by_name(items: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for entry in items:
        seen.setdefault(entry["name"], entry)
    return list(seen.values())


@FAST
@given(named_lists(SCALARS), named_lists(SCALARS))
def test_a_named_list_merge_never_duplicates_a_name(base, patch):
    base = unique_by_name(base)  # a valid list: names are unique (the apiserver insists)
    out = merged({"spec": {"env": base}}, {"spec": {"env": patch}}, "x")["spec"]["env"]
    names = [entry["name"] for entry in out]
    assert len(names) == len(set(names))
    assert set(names) == {e["name"] for e in base} | {e["name"] for e in patch}
    assert names[: len(base)] == [e["name"] for e in base]  # existing items keep their place
    for entry in patch:  # the last patch value of each field wins
        if "v" in entry:
            last = [e["v"] for e in patch if e["name"] == entry["name"] and "v" in e][-1]
            assert next(e for e in out if e["name"] == entry["name"])["v"] == last
