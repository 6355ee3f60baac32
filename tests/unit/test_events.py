"""Which Events a reconcile tells on its instance, and what they look like."""

from __future__ import annotations

from jupyternetes_ssa import labels
from jupyternetes_ssa.events import Note, event_body, notes, pruned_notes
from jupyternetes_ssa.types import (
    InstanceResult,
    ItemOutcome,
    ObjectRef,
    PruneCandidate,
    RenderedItem,
)

INSTANCE = {
    "apiVersion": "kadense.io/v1",
    "kind": "JupyterNotebookInstance",
    "metadata": {"name": "inst", "namespace": "ns", "uid": "u-1"},
}
POD = RenderedItem("pods", "notebook", {"kind": "Pod", "metadata": {"name": "inst-notebook"}})


def result(*outcomes: ItemOutcome, error: str = "", reason: str = "") -> InstanceResult:
    return InstanceResult(
        ObjectRef("JupyterNotebookInstance", "ns", "inst"), list(outcomes), error, reason
    )


def test_changes_are_told_and_steady_state_is_silent():
    assert notes(result(ItemOutcome(POD, "unchanged")), status_changed=True) == []
    told = notes(result(ItemOutcome(POD, "configured")), status_changed=False)
    assert told == [Note("Normal", "Applied", "pods[notebook] Pod inst-notebook configured")]


def test_a_first_start_is_told_by_the_status_not_by_events():
    assert notes(result(ItemOutcome(POD, "created")), status_changed=True) == []


def test_what_persists_over_passes_is_told_only_when_the_status_changes():
    pending = result(ItemOutcome(POD, "pending", fields=("spec.containers[0].image",)))
    assert notes(pending, status_changed=False) == []
    assert notes(pending, status_changed=True)[0].reason == "UpdatePending"
    conflict = result(ItemOutcome(POD, "failed", message="409 Conflict: field manager x"))
    assert notes(conflict, status_changed=True)[0] == Note(
        "Warning", "Conflict", "pods[notebook] Pod inst-notebook: 409 Conflict: field manager x"
    )
    error = result(error="JupyterNotebookTemplate ns/t does not exist", reason="TemplateNotFound")
    assert notes(error, status_changed=True) == [
        Note("Warning", "TemplateNotFound", "JupyterNotebookTemplate ns/t does not exist")
    ]


def test_pruned_objects_are_told_on_their_living_instance_only():
    def cand(instance: str) -> PruneCandidate:
        return PruneCandidate(
            ObjectRef("Pod", "ns", f"{instance}-x"),
            "uid",
            "1",
            "item no longer in the template",
            True,
            labels=frozenset({(labels.INSTANCE, instance)}),
        )

    told = pruned_notes([cand("inst"), cand("gone")], {("ns", "inst"): INSTANCE})
    assert [(i["metadata"]["name"], n.reason) for i, n in told] == [("inst", "Pruned")]


def test_the_same_story_again_is_the_same_event_object():
    note = Note("Warning", "Conflict", "x")
    first, again = event_body(INSTANCE, note, "T1"), event_body(INSTANCE, note, "T2")
    assert first["metadata"]["name"] == again["metadata"]["name"]
    other = event_body({**INSTANCE, "metadata": {**INSTANCE["metadata"], "uid": "u-2"}}, note, "T")
    assert other["metadata"]["name"] != first["metadata"]["name"], "a new incarnation: new events"
    assert first["involvedObject"] == {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookInstance",
        "name": "inst",
        "namespace": "ns",
        "uid": "u-1",
    }
