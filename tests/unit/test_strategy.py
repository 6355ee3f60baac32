"""updateStrategy: reading it from an item, what we applied (managedFields), and the decision."""

from __future__ import annotations

import copy

import pytest

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.managed import applied_by
from jupyternetes_ssa.strategy import PodChange, decide, item_strategy, metadata_only, pod_change

HASH = labels.APPLIED_HASH

# A pod as the apiserver returns it after our apply of APPLIED: defaults, an admission-added
# volume, another manager's label, status; managedFields name exactly what we sent.
LIVE = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "inst-notebook",
        "namespace": "ns",
        "uid": "pod-uid",
        "labels": {"team": "a", "other": "x"},
        "annotations": {HASH: "old"},
        "ownerReferences": [
            {
                "apiVersion": "kadense.io/v1",
                "kind": "JupyterNotebookInstance",
                "name": "inst",
                "uid": "i1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": [
            {
                "manager": FIELD_MANAGER,
                "operation": "Apply",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:annotations": {f"f:{HASH}": {}},
                        "f:labels": {"f:team": {}},
                        "f:ownerReferences": {'k:{"uid":"i1"}': {}},
                    },
                    "f:spec": {
                        "f:containers": {
                            'k:{"name":"notebook"}': {
                                ".": {},
                                "f:image": {},
                                "f:name": {},
                                "f:args": {},
                                "f:env": {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}},
                                "f:ports": {
                                    'k:{"containerPort":8888,"protocol":"TCP"}': {
                                        ".": {},
                                        "f:containerPort": {},
                                    }
                                },
                                "f:resources": {"f:limits": {"f:memory": {}}},
                            }
                        },
                        "f:tolerations": {},
                        "f:securityContext": {".": {}},
                    },
                },
            },
            {
                "manager": "other",
                "operation": "Update",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:other": {}}}},
            },
            {
                "manager": FIELD_MANAGER,
                "operation": "Apply",
                "subresource": "status",
                "fieldsV1": {"f:status": {}},
            },
        ],
    },
    "spec": {
        "containers": [
            {
                "name": "notebook",
                "image": "jupyter/base:1",
                "args": ["--debug"],
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 8888, "protocol": "TCP"}],
                "resources": {"limits": {"memory": "2Gi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run"}],
                "terminationMessagePath": "/dev/termination-log",
            }
        ],
        "tolerations": [{"key": "pool", "operator": "Exists"}],
        "securityContext": {},
        "volumes": [{"name": "kube-api-access", "projected": {}}],
        "dnsPolicy": "ClusterFirst",
        "nodeName": "node-1",
    },
    "status": {"phase": "Running"},
}
APPLIED = {
    "metadata": {
        "labels": {"team": "a"},
        "annotations": {HASH: "old"},
        "ownerReferences": LIVE["metadata"]["ownerReferences"],
    },
    "spec": {
        "containers": [
            {
                "name": "notebook",
                "image": "jupyter/base:1",
                "args": ["--debug"],
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 8888}],
                "resources": {"limits": {"memory": "2Gi"}},
            }
        ],
        "tolerations": [{"key": "pool", "operator": "Exists"}],
        "securityContext": {},
    },
}


def desired(**changes) -> dict:
    """What we would apply now: APPLIED with name, kind and a new hash, then `changes`."""
    out = copy.deepcopy(APPLIED)
    out.update(apiVersion="v1", kind="Pod")
    out["metadata"].update(name="inst-notebook", namespace="ns")
    out["metadata"]["annotations"][HASH] = "new"
    for edit in changes.values():
        edit(out)
    return out


def container(manifest: dict) -> dict:
    return manifest["spec"]["containers"][0]


# --- managed.applied_by ----------------------------------------------------------------------


def test_applied_by_reads_back_exactly_what_we_applied():
    assert applied_by(LIVE, FIELD_MANAGER) == APPLIED


def test_applied_by_knows_nothing_of_other_managers_or_objects_without_fields():
    assert applied_by(LIVE, "other") == {}  # an Update, not an apply
    bare = {k: v for k, v in LIVE.items() if k != "metadata"} | {"metadata": {"name": "x"}}
    assert applied_by(bare, FIELD_MANAGER) == {}


def test_applied_by_matches_set_and_index_elements():
    live = {
        "metadata": {
            "managedFields": [
                {
                    "manager": "m",
                    "operation": "Apply",
                    "fieldsV1": {
                        "f:metadata": {"f:finalizers": {'v:"a/b"': {}}},
                        "f:spec": {"f:items": {"i:1": {"f:x": {}}}},
                    },
                }
            ],
            "finalizers": ["other", "a/b"],
        },
        "spec": {"items": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]},
    }
    assert applied_by(live, "m") == {
        "metadata": {"finalizers": ["a/b"]},
        "spec": {"items": [{"x": 1}]},
    }


# --- strategy.pod_change / decide ------------------------------------------------------------


def test_no_change_but_our_hash_is_no_change():
    assert pod_change(APPLIED, desired()) == PodChange((), ())


def test_spec_changes_are_named_additions_and_removals_included():
    change = pod_change(
        APPLIED,
        desired(
            image=lambda d: container(d).update(image="jupyter/base:2"),
            env=lambda d: container(d)["env"].append({"name": "B", "value": "2"}),
            args=lambda d: container(d).pop("args"),
        ),
    )
    assert change.spec == (
        "spec.containers[0].args",
        "spec.containers[0].env",
        "spec.containers[0].image",
    )
    assert change.metadata == ()


def test_without_a_record_of_our_apply_the_spec_waits_and_our_metadata_goes_on():
    """An adopted pod: we own none of its fields, so a metadata-only apply drops nothing of
    ours (README: "an adopted pod gets its metadata and its spec change waits")."""
    wanted = desired(label=lambda d: d["metadata"]["labels"].update(team="b"))
    change = pod_change({}, wanted)
    assert change.spec == ("spec",) and "metadata.labels" in change.metadata
    assert decide("OnRestart", change) == "metadata"
    body = metadata_only({}, wanted)
    assert "spec" not in body and body["metadata"]["labels"]["team"] == "b"


def test_quantities_and_defaults_are_no_change():
    same = desired(mem=lambda d: container(d)["resources"]["limits"].update(memory="2048Mi"))
    assert pod_change(APPLIED, same).spec == ()


def test_metadata_changes_are_told_apart_from_spec():
    change = pod_change(
        APPLIED,
        desired(
            label=lambda d: d["metadata"]["labels"].update(team="b"),
            note=lambda d: d["metadata"]["annotations"].update(note="n"),
        ),
    )
    assert change.spec == ()
    assert change.metadata == ("metadata.annotations.note", "metadata.labels.team")
    removed = pod_change(APPLIED, desired(label=lambda d: d["metadata"]["labels"].clear()))
    assert removed.metadata == ("metadata.labels.team",)


SPEC = PodChange(("spec.containers[0].image",), ())
BOTH = PodChange(("spec.containers[0].image",), ("metadata.labels.team",))
META = PodChange((), ("metadata.labels.team",))


@pytest.mark.parametrize(
    ("strategy", "change", "decision"),
    [
        ("OnRestart", SPEC, "wait"),
        ("OnRestart", BOTH, "metadata"),
        ("OnRestart", META, "apply"),
        ("OnRestart", PodChange((), ()), "apply"),
        ("InPlace", SPEC, "apply"),
        ("InPlace", BOTH, "apply"),
        ("Recreate", SPEC, "recreate"),
        ("Recreate", BOTH, "recreate"),
        ("Recreate", META, "apply"),
    ],
)
def test_decide(strategy, change, decision):
    assert decide(strategy, change) == decision


def test_metadata_only_keeps_the_applied_spec_and_drops_the_hash():
    new = desired(
        image=lambda d: container(d).update(image="jupyter/base:2"),
        label=lambda d: d["metadata"]["labels"].update(team="b"),
    )
    body = metadata_only(APPLIED, new)
    assert body["spec"] == APPLIED["spec"]
    assert body["metadata"]["labels"] == {"team": "b"}
    assert "annotations" not in body["metadata"]  # matches no rendered manifest any more
    noted = desired(note=lambda d: d["metadata"]["annotations"].update(note="n"))
    assert metadata_only(APPLIED, noted)["metadata"]["annotations"] == {"note": "n"}
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"]) == (
        "v1",
        "Pod",
        "inst-notebook",
    )
    assert pod_change(applied_by_after(body), new) == PodChange(("spec.containers[0].image",), ())


def applied_by_after(body: dict) -> dict:
    """What applied_by reads back once `body` is applied (the fields of body, live values)."""
    return {k: v for k, v in body.items() if k not in ("apiVersion", "kind")} | {
        "metadata": {k: v for k, v in body["metadata"].items() if k not in ("name", "namespace")}
    }


# --- strategy.item_strategy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "strategy"),
    [
        ({}, "OnRestart"),
        ({"recreateOnChange": False}, "OnRestart"),
        ({"recreateOnChange": True}, "Recreate"),
        ({"updateStrategy": "InPlace"}, "InPlace"),
        ({"updateStrategy": "Recreate", "recreateOnChange": True}, "Recreate"),
    ],
)
def test_item_strategy(item, strategy):
    assert item_strategy("pods", item, "pods[p]") == strategy


@pytest.mark.parametrize(
    ("section", "item", "path"),
    [
        ("pods", {"updateStrategy": "Rolling"}, "pods[p].updateStrategy"),
        (
            "pods",
            {"updateStrategy": "InPlace", "recreateOnChange": True},
            "pods[p].recreateOnChange",
        ),
        ("pvcs", {"updateStrategy": "Recreate"}, "pvcs[p].updateStrategy"),
    ],
)
def test_item_strategy_errors_name_the_field(section, item, path):
    with pytest.raises(RenderError) as info:
        item_strategy(section, item, f"{section}[p]")
    assert info.value.path == path
    assert info.value.fix


def test_tolerations_kubernetes_adds_are_no_change():
    """DefaultTolerationSeconds appends not-ready/unreachable to a tolerations list we own."""
    ours = [{"key": "a", "operator": "Exists"}]
    admitted = [
        *ours,
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
    ]  # fmt: skip
    desired = {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"x": "2"}},
               "spec": {"tolerations": ours}}  # fmt: skip
    applied = {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"x": "1"}},
               "spec": {"tolerations": admitted}}  # fmt: skip
    change = pod_change(applied, desired)
    assert change.spec == () and change.metadata
    assert pod_change(applied, {**desired, "spec": {"tolerations": []}}).spec  # a real change
