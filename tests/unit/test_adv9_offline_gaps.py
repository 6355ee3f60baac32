"""adv9: field names the offline schema check once never judged, yet vouched for (fields_known,
so the apply asked for fieldValidation=Ignore; `validate` in a template author's CI said valid):
a NUL in a field name, and a patch that conflicts with the bare item but merges after the
others. Both are now refused offline, with the path; the apiserver refuses them too
(tests/integration/test_adv9_field_validation.py)."""

from __future__ import annotations

import copy

from jupyternetes_ssa.validate import check_pair

BASE = {
    "name": "nb",
    "spec": {"securityContext": {"runAsUser": 1000}, "containers": [{"name": "nb", "image": "x"}]},
}
INSTANCE = {
    "apiVersion": "kadense.io/v1",
    "kind": "JupyterNotebookInstance",
    "metadata": {"name": "i", "namespace": "ns", "uid": "u"},
    "spec": {"template": {"name": "t"}, "variables": {}},
}


def _template(item: dict) -> dict:
    return {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookTemplate",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"pods": [item]},
    }


def _verdict(item: dict):
    rendered, problems, _ = check_pair(_template(item), INSTANCE, schema_on_rendered=False)
    return rendered, problems


def test_a_nul_in_a_field_name_is_judged_offline():
    item = copy.deepcopy(BASE)
    item["spec"]["hostnamee\x00"] = "h"
    _, problems = _verdict(item)
    assert any("hostnamee" in p.path or "hostnamee" in p.message for p in problems), problems


def test_every_patch_that_can_apply_is_judged_offline():
    item = copy.deepcopy(BASE)
    item["patches"] = [
        {"merge": {"spec": {"securityContext": None}}},
        {"merge": {"spec": {"securityContext": "x", "hostnamee": "h"}}},  # conflicts alone
        {"merge": {"spec": {"securityContext": None}}},
    ]
    rendered, problems = _verdict(item)
    assert problems, [i.manifest["spec"] for i in rendered.items]  # renders with hostnamee


def test_a_placeholder_field_name_in_a_patch_is_not_vouched_for():
    """Held: a '{' in any key of a patch, a list of maps or a nested map: fields_known False."""
    for where in (
        {"patches": [{"merge": {"spec": {"{f}": "x"}}}]},
        {
            "spec": {
                **BASE["spec"],
                "containers": [{"name": "nb", "image": "x", "securityContext": {"{f}": True}}],
            }
        },
        {"spec": {**BASE["spec"], "hostname": "h", "{{literal}}": "x"}},
    ):
        item = {**copy.deepcopy(BASE), **where}
        rendered, _, _ = check_pair(
            _template(item),
            {**INSTANCE, "spec": {**INSTANCE["spec"], "variables": {"f": "a"}}},
            schema_on_rendered=False,
        )
        assert rendered is None or not any(i.fields_known for i in rendered.items), where
