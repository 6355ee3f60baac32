"""observe.cached: what the caches keep of an object must answer every question the full object
answers (what we applied, who else holds our fields), in less memory."""

from __future__ import annotations

import copy
import json

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.diff import contested
from jupyternetes_ssa.managed import applied_by
from jupyternetes_ssa.observe import cached

OURS = {
    "f:metadata": {"f:labels": {f"f:{labels.MANAGED_BY}": {}}},
    "f:spec": {
        "f:containers": {
            'k:{"name":"notebook"}': {
                ".": {},
                "f:name": {},
                "f:image": {},
                "f:env": {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}},
            }
        }
    },
}
THEIRS = {"f:spec": {"f:containers": {'k:{"name":"notebook"}': {"f:env": {'k:{"name":"B"}': {}}}}}}


def _pod(user: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{user}-notebook",
            "namespace": "ns",
            "labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE},
            "managedFields": [
                {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": OURS},
                {"manager": "webhook", "operation": "Update", "fieldsV1": THEIRS},
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": ":".join(
                        ["quay.io/jupyter/base-notebook", "latest"]
                    ),  # a new str each
                    "env": [{"name": "A", "value": user}, {"name": "B", "value": "added"}],
                    "terminationMessagePath": "/dev/termination-log",  # a server default
                }
            ],
            "tolerations": [{"key": "node.kubernetes.io/not-ready"}],  # a server default
        },
        "status": {"phase": "Pending"},
    }


def test_cached_pod_answers_what_we_applied_and_who_else_holds_our_fields() -> None:
    full = _pod("alice")
    kept = cached(copy.deepcopy(full))
    assert applied_by(kept, FIELD_MANAGER) == applied_by(full, FIELD_MANAGER)
    assert "tolerations" not in kept["spec"]  # not ours: not kept
    desired = {"spec": applied_by(full, FIELD_MANAGER)["spec"]}
    assert contested(desired, kept, FIELD_MANAGER) == contested(desired, full, FIELD_MANAGER)
    ours = next(e for e in kept["metadata"]["managedFields"] if e["manager"] == FIELD_MANAGER)
    assert len(ours["fieldsV1"]) < len(json.dumps(OURS)) / 2  # the spec part is folded away


def test_cached_twice_is_the_same() -> None:
    once = cached(_pod("alice"))
    assert cached(copy.deepcopy(once)) == once
    assert applied_by(cached(copy.deepcopy(once)), FIELD_MANAGER) == applied_by(
        _pod("alice"), FIELD_MANAGER
    )


def test_cached_objects_share_equal_strings() -> None:
    a, b = cached(_pod("alice")), cached(_pod("bob"))
    image = [o["spec"]["containers"][0]["image"] for o in (a, b)]
    assert image[0] is image[1]  # one copy of a string 5,000 pods repeat


def test_cached_instance_drops_who_wrote_it() -> None:
    instance = {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookInstance",
        "metadata": {"name": "i", "namespace": "ns", "managedFields": [{"manager": "hub"}]},
        "spec": {"template": {"name": "t"}},
    }
    kept = cached(instance)
    assert "managedFields" not in kept["metadata"] and kept["spec"] == {"template": {"name": "t"}}


def test_lists_pause_the_cycle_collector() -> None:
    import gc

    from jupyternetes_ssa.observe import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # lists of several kinds run at once
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other list still decodes
        kept = [{"n": [i]} for i in range(1000)]  # tracked: they hold a container
        assert gc.get_count()[0] >= len(kept)  # young, unwalked while paused
    assert gc.isenabled() and len(kept) == 1000
    assert gc.get_count()[0] < len(kept)  # walked once and moved on, not left young
    assert not gc.get_freeze_count()  # nothing pinned
