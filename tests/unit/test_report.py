"""report.py: the pass summary as text for people and as JSON for machines."""

from __future__ import annotations

import json

import pytest

from jupyternetes_ssa.report import summary_dict, summary_json, summary_text
from jupyternetes_ssa.types import (
    InstanceResult,
    ItemOutcome,
    ObjectRef,
    PruneCandidate,
    RenderedItem,
    Summary,
)

NS = "hub"


def item(section: str, name: str, obj: str) -> RenderedItem:
    kind = "Pod" if section == "pods" else "PersistentVolumeClaim"
    manifest = {"kind": kind, "metadata": {"name": obj, "namespace": NS}}
    return RenderedItem(section, name, manifest)  # type: ignore[arg-type]


def ref(name: str) -> ObjectRef:
    return ObjectRef("JupyterNotebookInstance", NS, name)


def converged() -> InstanceResult:
    return InstanceResult(
        ref("alice"),
        [
            ItemOutcome(item("pvcs", "home", "alice-home"), "created"),
            ItemOutcome(item("pods", "notebook", "alice-notebook"), "unchanged"),
        ],
        status_written=True,
    )


def failed() -> InstanceResult:
    return InstanceResult(
        ref("bob"),
        [
            ItemOutcome(item("pvcs", "home", "bob-home"), "failed", message="quota exceeded"),
            ItemOutcome(
                item("pods", "notebook", "bob-notebook"),
                "failed",
                message="held back: quota exceeded",
            ),
        ],
        error="quota exceeded",
        reason="ApplyFailed",
    )


def pending() -> InstanceResult:
    return InstanceResult(
        ref("carol"),
        [
            ItemOutcome(
                item("pods", "notebook", "carol-notebook"),
                "pending",
                message="Forbidden: pod updates may not change fields",
                fields=("spec.containers[0].image", "spec.nodeName"),
            )
        ],
    )


PRUNED = PruneCandidate(
    ObjectRef("Pod", NS, "dave-notebook"), "u1", "10", "its instance dave no longer exists", True
)
KEPT = PruneCandidate(
    ObjectRef("PersistentVolumeClaim", NS, "dave-home"),
    "u2",
    "11",
    "its instance dave no longer exists",
    False,
)


def summary(**kw) -> Summary:
    return Summary([converged(), failed()], [PRUNED], [KEPT], **kw)


# --- text --------------------------------------------------------------------------------------


def test_text_converged_instance_counts_actions_sorted() -> None:
    lines = summary_text(summary()).splitlines()
    assert lines[0] == "hub/alice: 1 created, 1 unchanged"


def test_text_converged_instance_has_no_item_lines() -> None:
    text = summary_text(Summary([converged()]))
    assert text.splitlines() == [
        "hub/alice: 1 created, 1 unchanged",
        "1 instances, 0 not converged, 0 pruned, 0 kept",
    ]


def test_text_failed_instance_shows_reason_error_and_items() -> None:
    lines = summary_text(summary()).splitlines()
    assert "hub/bob: 2 failed -- ERROR ApplyFailed: quota exceeded" in lines
    assert "  pvcs[home] bob-home: failed" in lines
    assert "  pods[notebook] bob-notebook: failed (held back: quota exceeded)" in lines
    at = lines.index("hub/bob: 2 failed -- ERROR ApplyFailed: quota exceeded")
    assert lines[at + 1 : at + 3] == [
        "  pvcs[home] bob-home: failed",
        "  pods[notebook] bob-notebook: failed (held back: quota exceeded)",
    ]


def test_text_pending_item_names_fields_and_message() -> None:
    lines = summary_text(Summary([pending()])).splitlines()
    assert lines[:2] == [
        "hub/carol: 1 pending",
        "  pods[notebook] carol-notebook: pending spec.containers[0].image, spec.nodeName"
        " (Forbidden: pod updates may not change fields)",
    ]
    assert lines[-1] == "1 instances, 1 not converged, 0 pruned, 0 kept"


def test_text_instance_with_nothing_to_do() -> None:
    text = summary_text(Summary([InstanceResult(ref("erin"))]))
    assert text.splitlines()[0] == "hub/erin: nothing"


def test_text_pruned_and_kept_objects() -> None:
    lines = summary_text(summary()).splitlines()
    assert "pruned Pod hub/dave-notebook: its instance dave no longer exists" in lines
    assert (
        "kept PersistentVolumeClaim hub/dave-home: its instance dave no longer exists"
        " (deletionPolicy Retain)"
    ) in lines


def test_text_totals_last() -> None:
    lines = summary_text(summary()).splitlines()
    assert lines[-1] == "2 instances, 1 not converged, 1 pruned, 1 kept"


def test_text_dry_run_says_would_be_pruned() -> None:
    lines = summary_text(summary(), dry_run=True).splitlines()
    assert "would be pruned Pod hub/dave-notebook: its instance dave no longer exists" in lines
    assert lines[-1] == "2 instances, 1 not converged, 1 would be pruned, 1 kept"
    assert not any(line.startswith("pruned ") for line in lines)


def test_text_prune_error() -> None:
    lines = summary_text(summary(prune_error="list pods: 503")).splitlines()
    assert "garbage collection stopped: list pods: 503" in lines
    assert lines[-1].startswith("2 instances")


def test_text_empty_summary() -> None:
    assert summary_text(Summary()) == "0 instances, 0 not converged, 0 pruned, 0 kept"


# --- json --------------------------------------------------------------------------------------


def test_json_is_the_dict_and_valid_json() -> None:
    s = summary()
    assert json.loads(summary_json(s)) == summary_dict(s)


def test_json_not_ok_with_a_failed_instance() -> None:
    assert json.loads(summary_json(summary()))["ok"] is False


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        (Summary(), True),
        (Summary([converged()], [PRUNED], [KEPT]), True),
        (Summary([converged()], prune_error="boom"), False),
        (Summary([pending()]), False),
    ],
)
def test_json_ok(s: Summary, ok: bool) -> None:
    assert json.loads(summary_json(s))["ok"] is ok


def test_json_converged_instance() -> None:
    alice = json.loads(summary_json(summary()))["instances"][0]
    assert alice == {
        "instance": "hub/alice",
        "converged": True,
        "actions": {"created": 1, "unchanged": 1},
        "error": "",
        "reason": "",
        "statusWritten": True,
        "items": [
            {
                "item": "pvcs[home]",
                "object": "alice-home",
                "action": "created",
                "message": "",
                "fields": [],
            },
            {
                "item": "pods[notebook]",
                "object": "alice-notebook",
                "action": "unchanged",
                "message": "",
                "fields": [],
            },
        ],
    }


def test_json_failed_instance_keeps_every_item_message() -> None:
    bob = json.loads(summary_json(summary()))["instances"][1]
    assert bob["instance"] == "hub/bob"
    assert bob["converged"] is False
    assert bob["actions"] == {"failed": 2}
    assert (bob["error"], bob["reason"]) == ("quota exceeded", "ApplyFailed")
    assert bob["statusWritten"] is False
    assert [(i["item"], i["action"], i["message"]) for i in bob["items"]] == [
        ("pvcs[home]", "failed", "quota exceeded"),
        ("pods[notebook]", "failed", "held back: quota exceeded"),
    ]


def test_json_pending_fields_are_a_list() -> None:
    carol = json.loads(summary_json(Summary([pending()])))["instances"][0]
    assert carol["items"][0]["fields"] == ["spec.containers[0].image", "spec.nodeName"]
    assert carol["converged"] is False


def test_json_pruned_kept_and_prune_error() -> None:
    data = json.loads(summary_json(summary(prune_error="list pods: 503")))
    assert data["pruned"] == [
        {"object": "Pod hub/dave-notebook", "reason": "its instance dave no longer exists"}
    ]
    assert data["kept"] == [
        {
            "object": "PersistentVolumeClaim hub/dave-home",
            "reason": "its instance dave no longer exists (kept: deletionPolicy Retain)",
        }
    ]
    assert data["pruneError"] == "list pods: 503"


def test_json_empty_summary() -> None:
    assert json.loads(summary_json(Summary())) == {
        "ok": True,
        "instances": [],
        "pruned": [],
        "kept": [],
        "pruneError": "",
    }


def test_text_shows_why_each_item_failed() -> None:
    result = InstanceResult(
        ref("frank"),
        [
            ItemOutcome(item("pvcs", "home", "frank-home"), "failed", message="quota exceeded"),
            ItemOutcome(item("pods", "notebook", "frank-notebook"), "failed", message="bad image"),
        ],
        error="quota exceeded",
        reason="ApplyFailed",
    )
    text = summary_text(Summary([result]))
    assert "quota exceeded" in text
    assert "bad image" in text
