"""prune.plan_prune: which of our objects garbage collection may delete, and which it must keep."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import yaml

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.apply import stamped
from jupyternetes_ssa.observe import Key, Observed, identity, key_of
from jupyternetes_ssa.prune import Wanted, plan_prune
from jupyternetes_ssa.render import render
from jupyternetes_ssa.types import ObjectRef, RenderedItem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEMPLATE = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
INSTANCE = yaml.safe_load((EXAMPLES / "seed-instance.yaml").read_text())
_versions = itertools.count(100)


def an_instance(name: str | None = None, namespace: str | None = None) -> dict:
    inst = copy.deepcopy(INSTANCE)
    if name is not None:
        inst["metadata"]["name"] = name
        inst["spec"]["variables"]["jupyternetes.instance.name"] = name
    if namespace is not None:
        inst["metadata"]["namespace"] = namespace
        inst["spec"]["variables"]["jupyternetes.instance.namespace"] = namespace
    inst["metadata"]["uid"] = f"uid-{key_of(inst)}"
    return inst


def as_live(item: RenderedItem, manager: str = FIELD_MANAGER, keep_owner: bool = False) -> dict:
    """The object as the apiserver shows it after our server-side apply.

    Without `keep_owner` its ownerReference is gone, as after an orphaning delete: otherwise an
    object of a gone instance is Kubernetes' garbage collector's to delete, not ours.
    """
    live = stamped(item)
    if not keep_owner:
        live["metadata"].pop("ownerReferences", None)
    n = next(_versions)
    live["metadata"].update(
        uid=f"uid-{n}",
        resourceVersion=str(n),
        creationTimestamp="2024-01-01T00:00:00Z",
        managedFields=[
            {"manager": manager, "operation": "Apply", "apiVersion": "v1", "fieldsV1": {}},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1"},
        ],
    )
    return live


def live_objects(inst: dict, **item_options: object) -> dict[str, dict]:
    """The instance's rendered objects as live ones, by section."""
    template = copy.deepcopy(TEMPLATE)
    for item in template["spec"]["pvcs"]:
        item.update(item_options)
    return {i.section: as_live(i) for i in render(template, inst).items}


def observe(instances: list[dict], objects: list[dict[str, dict]], complete: bool = True):
    obs = Observed(complete=complete)
    obs.instances = {key_of(i): i for i in instances}
    for by_section in objects:
        for section, obj in by_section.items():
            getattr(obs, section)[key_of(obj)] = obj
    return obs


def wants_all(inst: dict, objects: dict[str, dict]) -> Wanted:
    return {key_of(inst): {identity(obj) for obj in objects.values()}}


def by_kind(candidates) -> dict[str, object]:
    return {c.ref.kind: c for c in candidates}


# --- nothing to do -----------------------------------------------------------------------------


def test_nothing_when_every_object_is_wanted() -> None:
    inst = an_instance()
    objs = live_objects(inst)
    assert plan_prune(observe([inst], [objs]), wants_all(inst, objs)) == []


def test_nothing_from_an_incomplete_picture() -> None:
    orphans = live_objects(an_instance(), deletionPolicy="Delete")
    assert plan_prune(observe([], [orphans], complete=False), {}) == []
    # the same picture, complete, does have candidates
    assert len(plan_prune(observe([], [orphans]), {})) == 2


def test_nothing_in_an_empty_cluster() -> None:
    assert plan_prune(observe([], []), {}) == []


# --- instance gone -----------------------------------------------------------------------------


def test_orphan_pod_of_a_gone_instance_is_deletable() -> None:
    inst = an_instance()
    objs = live_objects(inst)
    candidates = by_kind(plan_prune(observe([], [objs]), {}))
    pod = candidates["Pod"]
    meta = objs["pods"]["metadata"]
    assert pod.ref == ObjectRef("Pod", meta["namespace"], meta["name"])
    assert pod.uid == meta["uid"]
    assert pod.resource_version == meta["resourceVersion"]
    assert pod.allowed is True
    assert inst["metadata"]["name"] in pod.reason
    assert "no longer exists" in pod.reason


def test_orphan_pvc_under_retain_is_reported_but_not_deletable() -> None:
    objs = live_objects(an_instance())  # the seed PVC item has no deletionPolicy: Retain
    assert objs["pvcs"]["metadata"]["annotations"][labels.DELETION_POLICY] == "Retain"
    pvc = by_kind(plan_prune(observe([], [objs]), {}))["PersistentVolumeClaim"]
    meta = objs["pvcs"]["metadata"]
    assert pvc.ref == ObjectRef("PersistentVolumeClaim", meta["namespace"], meta["name"])
    assert (pvc.uid, pvc.resource_version) == (meta["uid"], meta["resourceVersion"])
    assert pvc.allowed is False


def test_orphan_pvc_under_delete_is_deletable() -> None:
    objs = live_objects(an_instance(), deletionPolicy="Delete")
    assert objs["pvcs"]["metadata"]["annotations"][labels.DELETION_POLICY] == "Delete"
    pvc = by_kind(plan_prune(observe([], [objs]), {}))["PersistentVolumeClaim"]
    assert pvc.allowed is True


def test_orphan_pvc_without_a_policy_annotation_is_retained() -> None:
    objs = live_objects(an_instance(), deletionPolicy="Delete")
    del objs["pvcs"]["metadata"]["annotations"][labels.DELETION_POLICY]
    pvc = by_kind(plan_prune(observe([], [objs]), {}))["PersistentVolumeClaim"]
    assert pvc.allowed is False


def test_pods_are_deletable_whatever_their_annotation_says() -> None:
    objs = live_objects(an_instance())
    objs["pods"]["metadata"]["annotations"][labels.DELETION_POLICY] = "Retain"
    assert by_kind(plan_prune(observe([], [objs]), {}))["Pod"].allowed is True


def test_only_the_gone_instance_objects_are_candidates() -> None:
    kept, gone = an_instance("alive"), an_instance("gone")
    kept_objs, gone_objs = live_objects(kept), live_objects(gone)
    candidates = plan_prune(observe([kept], [kept_objs, gone_objs]), wants_all(kept, kept_objs))
    assert {(c.ref.namespace, c.ref.name) for c in candidates} == {
        key_of(o) for o in gone_objs.values()
    }


def test_same_instance_name_in_another_namespace_does_not_protect() -> None:
    here, elsewhere = an_instance("same", "here"), an_instance("same", "elsewhere")
    objs = live_objects(here)
    candidates = plan_prune(observe([elsewhere], [objs]), {key_of(elsewhere): set()})
    assert {c.ref.namespace for c in candidates} == {"here"}
    assert len(candidates) == 2


def test_instance_with_a_long_name_is_found_through_its_hashed_label() -> None:
    inst = an_instance("x" * 70)
    objs = live_objects(inst)
    label = objs["pods"]["metadata"]["labels"][labels.INSTANCE]
    assert label != inst["metadata"]["name"]  # the label value had to be made valid
    assert plan_prune(observe([inst], [objs]), wants_all(inst, objs)) == []
    assert len(plan_prune(observe([], [objs]), {})) == 2


# --- never candidates --------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["pods", "pvcs"])
def test_objects_without_our_field_manager_are_never_candidates(section: str) -> None:
    objs = live_objects(an_instance(), deletionPolicy="Delete")
    for entry in objs[section]["metadata"]["managedFields"]:
        if entry["manager"] == FIELD_MANAGER:
            entry["manager"] = "kubectl"
    candidates = plan_prune(observe([], [objs]), {})
    assert [c.ref.kind for c in candidates] == [
        "PersistentVolumeClaim" if section == "pods" else "Pod"
    ]


@pytest.mark.parametrize("managed_fields", [None, []])
def test_objects_without_managed_fields_are_never_candidates(managed_fields: object) -> None:
    objs = live_objects(an_instance(), deletionPolicy="Delete")
    for obj in objs.values():
        if managed_fields is None:
            del obj["metadata"]["managedFields"]
        else:
            obj["metadata"]["managedFields"] = managed_fields
    assert plan_prune(observe([], [objs]), {}) == []


@pytest.mark.parametrize("value", [None, "helm", "Jupyternetes-SSA"])
def test_objects_without_our_managed_by_label_are_never_candidates(value: str | None) -> None:
    objs = live_objects(an_instance(), deletionPolicy="Delete")
    for obj in objs.values():
        if value is None:
            del obj["metadata"]["labels"][labels.MANAGED_BY]
        else:
            obj["metadata"]["labels"][labels.MANAGED_BY] = value
    assert plan_prune(observe([], [objs]), {}) == []


def test_objects_without_any_labels_are_never_candidates() -> None:
    objs = live_objects(an_instance(), deletionPolicy="Delete")
    for obj in objs.values():
        obj["metadata"]["labels"] = None
    assert plan_prune(observe([], [objs]), {}) == []


def test_objects_being_deleted_are_skipped() -> None:
    objs = live_objects(an_instance(), deletionPolicy="Delete")
    objs["pods"]["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    candidates = plan_prune(observe([], [objs]), {})
    assert [c.ref.kind for c in candidates] == ["PersistentVolumeClaim"]


# --- instance present --------------------------------------------------------------------------


def test_instance_with_unknown_wanted_set_protects_everything() -> None:
    inst = an_instance()
    objs = live_objects(inst, deletionPolicy="Delete")
    assert plan_prune(observe([inst], [objs]), {key_of(inst): None}) == []


def test_instance_not_yet_reconciled_protects_everything() -> None:
    inst = an_instance()
    objs = live_objects(inst, deletionPolicy="Delete")
    assert plan_prune(observe([inst], [objs]), {}) == []


def test_item_no_longer_wanted_is_a_candidate() -> None:
    inst = an_instance()
    objs = live_objects(inst, deletionPolicy="Delete")
    wanted: dict[Key, set | None] = {key_of(inst): {identity(objs["pvcs"])}}
    candidates = plan_prune(observe([inst], [objs]), wanted)
    assert len(candidates) == 1
    (pod,) = candidates
    assert pod.ref == ObjectRef("Pod", *key_of(objs["pods"]))
    assert pod.allowed is True
    assert "no longer lists item notebook" in pod.reason
    assert inst["metadata"]["name"] in pod.reason


def test_pvc_no_longer_wanted_follows_its_policy() -> None:
    inst = an_instance()
    for policy, allowed in (("Retain", False), ("Delete", True)):
        objs = live_objects(inst, deletionPolicy=policy)
        wanted: Wanted = {key_of(inst): {identity(objs["pods"])}}
        (pvc,) = plan_prune(observe([inst], [objs]), wanted)
        assert pvc.ref.kind == "PersistentVolumeClaim"
        assert pvc.allowed is allowed
        assert "no longer lists item workspace" in pvc.reason


def test_an_empty_wanted_set_lets_everything_go() -> None:
    inst = an_instance()
    objs = live_objects(inst)
    candidates = plan_prune(observe([inst], [objs]), {key_of(inst): set()})
    assert {c.ref.kind: c.allowed for c in candidates} == {
        "Pod": True,
        "PersistentVolumeClaim": False,
    }


def test_wanted_matches_kind_as_well_as_name() -> None:
    inst = an_instance()
    objs = live_objects(inst)
    pod_key = key_of(objs["pods"])
    wanted: Wanted = {key_of(inst): {("PersistentVolumeClaim", pod_key), identity(objs["pvcs"])}}
    candidates = plan_prune(observe([inst], [objs]), wanted)
    assert [c.ref for c in candidates] == [ObjectRef("Pod", *pod_key)]


def test_plan_does_not_modify_the_picture() -> None:
    inst = an_instance()
    objs = live_objects(inst)
    obs = observe([], [objs])
    before = copy.deepcopy((obs.pods, obs.pvcs, obs.instances))
    plan_prune(obs, {})
    assert (obs.pods, obs.pvcs, obs.instances) == before


def test_objects_kubernetes_collects_through_their_owner_reference_are_left_to_it() -> None:
    inst = an_instance()
    owned_pod = next(
        as_live(i, keep_owner=True) for i in render(TEMPLATE, inst).items if i.section == "pods"
    )
    assert owned_pod["metadata"]["ownerReferences"][0]["kind"] == "JupyterNotebookInstance"
    assert plan_prune(observe([], [{"pods": owned_pod}]), {}) == []
    orphaned = copy.deepcopy(owned_pod)
    del orphaned["metadata"]["ownerReferences"]
    assert [c.ref.kind for c in plan_prune(observe([], [{"pods": orphaned}]), {})] == ["Pod"]


def test_a_subset_of_objects_is_planned_alone() -> None:
    inst, other = an_instance(), an_instance("someone-else")
    mine, theirs = live_objects(inst), live_objects(other)
    picture = observe([], [mine, theirs])
    candidates = plan_prune(picture, {}, objects=list(mine.values()))
    assert {c.ref.name for c in candidates} == {o["metadata"]["name"] for o in mine.values()}
