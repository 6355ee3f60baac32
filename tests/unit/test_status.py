"""status.py: pod state and problems, item entries, conditions, and when a status write is due."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jupyternetes_ssa.observe import Observed
from jupyternetes_ssa.status import (
    MAX_MESSAGE,
    ItemView,
    instance_status,
    item_status,
    needs_write,
    notebook_port,
    pod_problems,
    pod_state,
    provisioned,
    urgent,
)

NS = "user-ns"


def make_pod(
    phase: str | None = "Running",
    ready: bool = True,
    name: str = "inst-notebook",
    uid: str = "pod-uid-1",
    ip: str | None = "10.1.2.3",
    **status: Any,
) -> dict:
    st: dict[str, Any] = {}
    if phase is not None:
        st["phase"] = phase
        st["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    if ip:
        st["podIP"] = ip
    st.update(status)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
        "spec": {
            "containers": [
                {"name": "sidecar", "ports": [{"containerPort": 9000}]},
                {"name": "notebook", "ports": [{"containerPort": 8888, "name": "http"}]},
            ]
        },
        "status": st,
    }


def make_pvc(phase: str = "Bound", name: str = "inst-home") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS, "uid": "pvc-uid"},
        "status": {"phase": phase},
    }


def event(
    reason: str, message: str, when: str, pod: str = "inst-notebook", uid: str | None = "pod-uid-1"
) -> dict:
    involved = {"kind": "Pod", "namespace": NS, "name": pod}
    if uid is not None:
        involved["uid"] = uid
    return {
        "metadata": {"uid": f"ev-{reason}-{when}", "namespace": NS},
        "type": "Warning",
        "reason": reason,
        "message": message,
        "lastTimestamp": when,
        "involvedObject": involved,
    }


def observed_with(*events: dict) -> Observed:
    obs = Observed()
    for e in events:
        obs.add_event(e)
    return obs


def instance(generation: int = 2, conditions: list | None = None, **status: Any) -> dict:
    inst: dict[str, Any] = {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookInstance",
        "metadata": {"name": "inst", "namespace": NS, "generation": generation},
        "spec": {"template": {"name": "t"}},
    }
    if conditions is not None or status:
        inst["status"] = dict(status)
        if conditions is not None:
            inst["status"]["conditions"] = conditions
    return inst


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def pod_view(live: dict | None = None, action: str = "unchanged", **kw: Any) -> ItemView:
    return ItemView("pods", "notebook", "inst-notebook", live, action, **kw)


def pvc_view(live: dict | None = None, action: str = "unchanged", **kw: Any) -> ItemView:
    return ItemView("pvcs", "home", "inst-home", live, action, **kw)


# --- pod_state ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "state"),
    [
        (None, "Missing"),
        (make_pod(), "Running"),
        (make_pod(ready=False), "Processed"),
        (make_pod(phase="Pending", ready=False), "Processed"),
        (make_pod(phase=None), "Processed"),
        (make_pod(phase="Pending", ready=True), "Processed"),
        (make_pod(phase="Failed", ready=False), "Failed"),
        (make_pod(phase="Succeeded", ready=False), "Succeeded"),
        (make_pod(phase="Unknown", ready=False), "Processed"),
    ],
)
def test_pod_state(pod: dict | None, state: str) -> None:
    assert pod_state(pod) == state


def test_pod_state_terminating_wins_over_phase() -> None:
    pod = make_pod()
    pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert pod_state(pod) == "Terminating"


def test_pod_state_running_without_conditions_is_not_running() -> None:
    pod = make_pod()
    del pod["status"]["conditions"]
    assert pod_state(pod) == "Processed"


# --- pod_problems ------------------------------------------------------------------------------


def test_pod_problems_empty_for_a_running_pod_even_with_events() -> None:
    obs = observed_with(event("BackOff", "old trouble", "2024-01-01T00:00:01Z"))
    assert pod_problems(make_pod(), obs) == ""


def test_pod_problems_empty_for_no_pod() -> None:
    assert pod_problems(None, Observed()) == ""


def test_pod_problems_waiting_reasons_of_containers() -> None:
    pod = make_pod(
        phase="Pending",
        ready=False,
        initContainerStatuses=[
            {"name": "init", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
        ],
        containerStatuses=[
            {
                "name": "notebook",
                "state": {
                    "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling "x"'}
                },
            },
            {"name": "sidecar", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
        ],
    )
    assert pod_problems(pod, Observed()) == (
        'container notebook ImagePullBackOff: Back-off pulling "x"; '
        "container sidecar CrashLoopBackOff"
    )


@pytest.mark.parametrize("benign", ["ContainerCreating", "PodInitializing", "Completed"])
def test_pod_problems_ignores_normal_progress(benign: str) -> None:
    pod = make_pod(
        phase="Pending",
        ready=False,
        containerStatuses=[{"name": "notebook", "state": {"waiting": {"reason": benign}}}],
    )
    assert pod_problems(pod, Observed()) == ""


def test_pod_problems_init_containers_first_and_terminated_errors() -> None:
    pod = make_pod(
        phase="Pending",
        ready=False,
        initContainerStatuses=[
            {"name": "prep", "state": {"terminated": {"reason": "Error", "exitCode": 1}}}
        ],
        containerStatuses=[
            {"name": "notebook", "state": {"waiting": {"reason": "PodInitializing"}}}
        ],
    )
    assert pod_problems(pod, Observed()) == "container prep Error"


def test_pod_problems_pod_level_reason_and_message() -> None:
    pod = make_pod(phase="Failed", ready=False, reason="Evicted", message="low on memory")
    assert pod_problems(pod, Observed()) == "Evicted: low on memory"
    pod = make_pod(phase="Pending", ready=False, message="no reason given")
    assert pod_problems(pod, Observed()) == "no reason given"


def test_pod_problems_newest_warning_events_after_waiting_reasons() -> None:
    pod = make_pod(
        phase="Pending",
        ready=False,
        containerStatuses=[{"name": "notebook", "state": {"waiting": {"reason": "ErrImagePull"}}}],
    )
    obs = observed_with(
        event("E4", " fourth ", "2024-01-01T00:00:04Z"),
        event("E1", "first", "2024-01-01T00:00:01Z"),
        event("E3", "third", "2024-01-01T00:00:03Z"),
        event("E2", "second", "2024-01-01T00:00:02Z"),
    )
    assert pod_problems(pod, obs) == (
        "container notebook ErrImagePull; E2: second; E3: third; E4: fourth"
    )
    assert pod_problems(pod, obs, limit=1) == "container notebook ErrImagePull; E4: fourth"


def test_pod_problems_only_events_of_this_pod_incarnation() -> None:
    pod = make_pod(phase="Pending", ready=False)
    obs = observed_with(
        event("Old", "previous pod", "2024-01-01T00:00:09Z", uid="old-uid"),
        event("Other", "another pod", "2024-01-01T00:00:09Z", pod="someone-else"),
        event("NoUid", "matched by name", "2024-01-01T00:00:01Z", uid=None),
        event("FailedScheduling", "0/1 nodes", "2024-01-01T00:00:02Z"),
    )
    assert pod_problems(pod, obs) == "NoUid: matched by name; FailedScheduling: 0/1 nodes"


def test_pod_problems_truncated() -> None:
    pod = make_pod(phase="Pending", ready=False, message="x" * (3 * MAX_MESSAGE))
    assert len(pod_problems(pod, Observed())) == MAX_MESSAGE


# --- notebook_port -----------------------------------------------------------------------------


def test_notebook_port_prefers_the_container_named_notebook() -> None:
    assert notebook_port(make_pod()) == 8888


def test_notebook_port_falls_back_to_the_first_container() -> None:
    first = {"name": "a", "ports": [{"containerPort": 1}, {"containerPort": 2}]}
    pod = {"spec": {"containers": [first, {"name": "b", "ports": [{"containerPort": 3}]}]}}
    assert notebook_port(pod) == 1


@pytest.mark.parametrize(
    "pod",
    [
        {},
        {"spec": {}},
        {"spec": {"containers": []}},
        {"spec": {"containers": [{"name": "notebook"}]}},
        {"spec": {"containers": [{"name": "notebook", "ports": []}]}},
    ],
)
def test_notebook_port_none_without_ports(pod: dict) -> None:
    assert notebook_port(pod) is None


# --- item_status -------------------------------------------------------------------------------


def test_item_status_running_pod() -> None:
    assert item_status(pod_view(make_pod()), Observed()) == {
        "resourceName": "inst-notebook",
        "state": "Running",
        "podAddress": "10.1.2.3",
        "portNumber": 8888,
    }


def test_item_status_starting_pod_carries_its_problems() -> None:
    pod = make_pod(phase="Pending", ready=False, ip=None)
    obs = observed_with(event("FailedScheduling", "0/1 nodes available", "2024-01-01T00:00:01Z"))
    entry = item_status(pod_view(pod), obs)
    assert entry == {
        "resourceName": "inst-notebook",
        "state": "Processed",
        "portNumber": 8888,
        "errorMessage": "FailedScheduling: 0/1 nodes available",
    }


def test_item_status_missing_pod() -> None:
    assert item_status(pod_view(None), Observed()) == {
        "resourceName": "inst-notebook",
        "state": "Missing",
    }


def test_item_status_failed_apply_is_an_error_with_its_message() -> None:
    entry = item_status(pod_view(None, "failed", message="rejected: bad image"), Observed())
    assert entry == {
        "resourceName": "inst-notebook",
        "state": "Error",
        "errorMessage": "rejected: bad image",
    }


def test_item_status_failed_apply_replaces_pod_problems() -> None:
    pod = make_pod(phase="Pending", ready=False, message="unschedulable")
    entry = item_status(pod_view(pod, "failed", message="held back"), Observed())
    assert entry["state"] == "Processed"  # it exists: its own state, the failure as message
    assert entry["errorMessage"] == "held back"
    assert item_status(pod_view(None, "failed", message="no"), Observed())["state"] == "Error"


@pytest.mark.parametrize("action", ["pending", "recreating"])
def test_item_status_pending_update_names_the_fields(action: str) -> None:
    view = pod_view(make_pod(), action, fields=("spec.containers[0].image", "spec.nodeName"))
    entry = item_status(view, Observed())
    assert entry["state"] == "Running"
    assert entry["parameters"] == {"updatePending": "spec.containers[0].image, spec.nodeName"}


def test_item_status_pvc() -> None:
    assert item_status(pvc_view(make_pvc("Bound")), Observed()) == {
        "resourceName": "inst-home",
        "state": "Processed",
        "parameters": {"phase": "Bound"},
    }
    unbound = make_pvc()
    del unbound["status"]
    assert item_status(pvc_view(unbound), Observed())["parameters"] == {"phase": "Pending"}
    assert item_status(pvc_view(None), Observed()) == {
        "resourceName": "inst-home",
        "state": "Missing",
    }


def test_item_status_failed_pvc() -> None:
    entry = item_status(pvc_view(make_pvc(), "failed", message="cannot shrink"), Observed())
    assert entry["state"] == "Processed"
    assert entry["errorMessage"] == "cannot shrink"


# --- provisioned -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["Running", "Processed"], "Completed"),
        (["Running", "Terminating", "Failed"], "Completed"),
        (["Running", "Missing"], "Partially Processed"),
        (["Error", "Processed"], "Partially Processed"),
        (["Missing"], "Pending"),
        (["Missing", "Error"], "Pending"),
    ],
)
def test_provisioned(states: list[str], expected: str) -> None:
    entries = {f"item{i}": {"state": s} for i, s in enumerate(states)}
    assert provisioned(entries) == expected


# --- instance_status ---------------------------------------------------------------------------


def test_instance_status_converged_and_ready() -> None:
    views = [pvc_view(make_pvc()), pod_view(make_pod())]
    status = instance_status(instance(generation=5), views, Observed(), now="T1")
    assert status["observedGeneration"] == 5
    assert status["phase"] == "Running"
    assert status["podsProvisioned"] == "Completed"
    assert status["pvcsProvisioned"] == "Completed"
    assert status["pods"]["notebook"]["state"] == "Running"
    assert status["pvcs"]["home"]["state"] == "Processed"
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Progressing", "Degraded"]
    assert {(c["type"], c["status"], c["reason"]) for c in status["conditions"]} == {
        ("Ready", "True", "PodsReady"),
        ("Progressing", "False", "Converged"),
        ("Degraded", "False", "AsExpected"),
    }
    for c in status["conditions"]:
        assert c["observedGeneration"] == 5
        assert c["lastTransitionTime"] == "T1"


def test_instance_status_generation_defaults_to_zero() -> None:
    inst = instance()
    del inst["metadata"]["generation"]
    status = instance_status(inst, [pod_view(make_pod())], Observed(), now="T1")
    assert status["observedGeneration"] == 0


def test_instance_status_just_applied_and_running_is_converged() -> None:
    views = [pvc_view(make_pvc(), "created"), pod_view(make_pod(), "configured")]
    status = instance_status(instance(), views, Observed(), now="T1")
    assert cond(status, "Ready")["status"] == "True"
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "Converged")
    unchanged = [pvc_view(make_pvc()), pod_view(make_pod())]
    assert instance_status(instance(), unchanged, Observed(), now="T1") == status


def test_instance_status_pod_starting() -> None:
    pod = make_pod(phase="Pending", ready=False, ip=None)
    obs = observed_with(event("FailedMount", "volume not ready", "2024-01-01T00:00:01Z"))
    views = [pvc_view(make_pvc("Pending")), pod_view(pod, "created")]
    status = instance_status(instance(), views, obs, now="T1")
    assert status["phase"] == "Pending"
    assert status["podsProvisioned"] == "Completed"
    ready, progressing, degraded = (cond(status, t) for t in ("Ready", "Progressing", "Degraded"))
    assert (ready["status"], ready["reason"]) == ("False", "NotReady")
    assert (progressing["status"], progressing["reason"]) == ("True", "PodsStarting")
    assert progressing["message"] == "pod notebook: FailedMount: volume not ready"
    assert ready["message"] == progressing["message"]
    assert (degraded["status"], degraded["reason"]) == ("False", "AsExpected")


def test_instance_status_pod_missing_says_starting() -> None:
    status = instance_status(instance(), [pod_view(None)], Observed(), now="T1")
    assert status["podsProvisioned"] == "Pending"
    assert cond(status, "Progressing")["reason"] == "PodsStarting"
    assert cond(status, "Progressing")["message"] == "pod notebook: starting"


def test_instance_status_update_pending_names_fields_and_fix() -> None:
    view = pod_view(make_pod(), "pending", fields=("spec.containers[0].image", "spec.nodeName"))
    status = instance_status(instance(), [pvc_view(make_pvc()), view], Observed(), now="T1")
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "UpdatePending")
    message = progressing["message"]
    assert "pods[notebook]: spec.containers[0].image, spec.nodeName" in message
    assert "updateStrategy: Recreate" in message
    assert "--recreate-pods" in message
    # the running pod keeps serving meanwhile
    assert cond(status, "Ready")["status"] == "True"
    assert status["phase"] == "Running"
    assert status["pods"]["notebook"]["parameters"]["updatePending"] == (
        "spec.containers[0].image, spec.nodeName"
    )


def test_instance_status_update_pending_without_fields_says_spec() -> None:
    status = instance_status(instance(), [pod_view(make_pod(), "pending")], Observed(), now="T")
    assert "pods[notebook]: spec" in cond(status, "Progressing")["message"]


def test_instance_status_recreating_has_no_fix_hint() -> None:
    view = pod_view(make_pod(), "recreating", fields=("spec.containers[0].image",))
    status = instance_status(instance(), [view], Observed(), now="T1")
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "Recreating")
    assert "pods[notebook]: spec.containers[0].image" in progressing["message"]
    assert "--recreate-pods" not in progressing["message"]


def test_instance_status_recreating_wins_over_update_pending() -> None:
    views = [
        ItemView("pods", "a", "inst-a", make_pod(name="inst-a"), "pending", fields=("spec.x",)),
        ItemView("pods", "b", "inst-b", make_pod(name="inst-b"), "recreating", fields=("spec.y",)),
    ]
    progressing = cond(instance_status(instance(), views, Observed(), now="T"), "Progressing")
    assert progressing["reason"] == "Recreating"
    assert "pods[a]: spec.x" in progressing["message"]
    assert "pods[b]: spec.y" in progressing["message"]


def test_instance_status_failed_item_is_degraded() -> None:
    views = [pvc_view(make_pvc(), "failed", message="rejected"), pod_view(make_pod())]
    status = instance_status(instance(), views, Observed(), now="T1")
    degraded = cond(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ItemFailed")
    assert degraded["message"] == "pvcs[home]: rejected"
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ItemFailed")
    assert status["pvcs"]["home"]["state"] == "Processed"  # the claim still exists
    assert status["pvcs"]["home"]["errorMessage"] == "rejected"
    assert status["pvcsProvisioned"] == "Completed"


def test_instance_status_failed_pod_phase() -> None:
    pod = make_pod(phase="Failed", ready=False, reason="Evicted", message="disk pressure")
    status = instance_status(instance(), [pod_view(pod)], Observed(), now="T1")
    assert status["phase"] == "Failed"
    degraded = cond(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ItemFailed")
    assert degraded["message"] == "pods[notebook]: Failed Evicted: disk pressure"
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Ready")["message"] == degraded["message"]


def test_instance_status_terminating_pod_phase() -> None:
    pod = make_pod()
    pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status = instance_status(instance(), [pod_view(pod, "configured")], Observed(), now="T")
    assert status["phase"] == "Terminating"
    assert cond(status, "Ready")["status"] == "False"


def test_instance_status_error_of_the_whole_instance() -> None:
    views = [pvc_view(make_pvc()), pod_view(make_pod())]  # its objects still live
    status = instance_status(
        instance(generation=4),
        views,
        Observed(),
        now="T1",
        error="unknown variable {x}",
        reason="RenderError",
    )
    assert status["phase"] == "Error"
    assert status["observedGeneration"] == 4
    assert status["podsProvisioned"] == "Completed"  # the objects it had still exist
    assert status["pvcsProvisioned"] == "Completed"
    degraded, ready = cond(status, "Degraded"), cond(status, "Ready")
    assert (degraded["status"], degraded["reason"]) == ("True", "RenderError")
    assert degraded["message"] == "unknown variable {x}"
    assert (ready["status"], ready["reason"]) == ("True", "PodsReady")  # the server still runs
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RenderError")


def test_instance_status_error_without_reason() -> None:
    status = instance_status(instance(), [], Observed(), now="T1", error="boom")
    assert cond(status, "Degraded")["reason"] == "Error"
    assert status["pods"] == {} and status["pvcs"] == {}


def test_instance_status_messages_truncated() -> None:
    status = instance_status(instance(), [], Observed(), now="T", error="e" * (5 * MAX_MESSAGE))
    assert all(len(c["message"]) <= MAX_MESSAGE for c in status["conditions"])
    assert len(cond(status, "Degraded")["message"]) == MAX_MESSAGE


def test_transition_time_kept_while_status_unchanged() -> None:
    first = instance_status(instance(), [pod_view(make_pod())], Observed(), now="T1")
    again = instance_status(instance(**first), [pod_view(make_pod())], Observed(), now="T2")
    assert [c["lastTransitionTime"] for c in again["conditions"]] == ["T1", "T1", "T1"]


def test_transition_time_set_to_now_when_status_flips() -> None:
    first = instance_status(instance(), [pod_view(make_pod())], Observed(), now="T1")
    starting = make_pod(phase="Pending", ready=False)
    flipped = instance_status(instance(**first), [pod_view(starting)], Observed(), now="T2")
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times == {"Ready": "T2", "Progressing": "T2", "Degraded": "T1"}


def test_transition_time_kept_when_only_reason_or_message_change() -> None:
    first = instance_status(
        instance(), [pod_view(make_pod(), "pending", fields=("spec.a",))], Observed(), now="T1"
    )
    second = instance_status(
        instance(**first), [pod_view(make_pod(), "recreating")], Observed(), now="T2"
    )
    progressing = cond(second, "Progressing")
    assert progressing["reason"] == "Recreating"
    assert progressing["lastTransitionTime"] == "T1"


def test_transition_time_set_when_previous_condition_lacks_one() -> None:
    previous = [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "True"}]
    status = instance_status(
        instance(conditions=previous), [pod_view(make_pod())], Observed(), now="T9"
    )
    assert cond(status, "Ready")["lastTransitionTime"] == "T9"
    assert "Other" not in {c["type"] for c in status["conditions"]}


# --- needs_write -------------------------------------------------------------------------------


def steady() -> tuple[dict, dict]:
    """An instance whose live status is what we wrote, and what the next pass computes."""
    views = [pvc_view(make_pvc()), pod_view(make_pod())]
    written = instance_status(instance(), views, Observed(), now="T1")
    live = instance(**copy.deepcopy(written))
    return live, instance_status(live, views, Observed(), now="T2")


def test_needs_write_false_in_a_steady_state() -> None:
    live, desired = steady()
    assert needs_write(live, desired) is False


def test_needs_write_ignores_status_fields_we_do_not_own() -> None:
    live, desired = steady()
    live["status"].update(hubNote="x")
    assert needs_write(live, desired) is False


def test_needs_write_takes_over_the_originals_empty_other_resources_fields() -> None:
    live, desired = steady()
    live["status"].update(otherResourcesProvisioned={})  # how the original's example has it
    assert needs_write(live, desired) is True


def test_needs_write_true_without_any_live_status() -> None:
    _, desired = steady()
    assert needs_write(instance(), desired) is True


def test_needs_write_true_when_a_value_changes() -> None:
    live, desired = steady()
    desired["pods"]["notebook"]["podAddress"] = "10.9.9.9"
    assert needs_write(live, desired) is True


def test_needs_write_true_when_a_key_we_wrote_disappears() -> None:
    live, desired = steady()
    desired["pods"] = {}  # the template no longer has the pod
    assert needs_write(live, desired) is True


def test_needs_write_true_when_a_nested_key_we_wrote_disappears() -> None:
    live, desired = steady()
    del desired["pods"]["notebook"]["podAddress"]
    assert needs_write(live, desired) is True


def test_needs_write_empty_maps_we_never_wrote_need_no_write() -> None:
    views: list[ItemView] = []
    desired = instance_status(instance(), views, Observed(), now="T1", error="e", reason="R")
    live = instance(**{k: v for k, v in copy.deepcopy(desired).items() if v != {}})
    assert "pods" not in live["status"]
    assert needs_write(live, desired) is False


def test_needs_write_empty_map_matches_a_live_empty_map() -> None:
    desired = instance_status(instance(), [], Observed(), now="T1", error="e", reason="R")
    live = instance(**copy.deepcopy(desired))  # like the hub's seed status: pods: {}
    assert needs_write(live, desired) is False


def test_needs_write_does_not_modify_its_arguments() -> None:
    live, desired = steady()
    before = copy.deepcopy((live, desired))
    needs_write(live, desired)
    assert (live, desired) == before


def test_instance_status_update_waiting_for_the_next_start() -> None:
    view = pod_view(make_pod(), "waiting", fields=("spec.containers[0].image",))
    status = instance_status(instance(), [pvc_view(make_pvc()), view], Observed(), now="T1")
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "UpdatePendingRestart")
    assert "next start" in progressing["message"]
    assert "pods[notebook]: spec.containers[0].image" in progressing["message"]
    assert "--recreate-pods" not in progressing["message"]  # waiting is what was asked for
    assert cond(status, "Ready")["status"] == "True"
    assert cond(status, "Degraded")["status"] == "False"
    assert status["phase"] == "Running"
    assert status["pods"]["notebook"]["parameters"]["updatePending"] == "spec.containers[0].image"
    live = instance(**copy.deepcopy(status))
    again = instance_status(live, [pvc_view(make_pvc()), view], Observed(), now="T2")
    assert needs_write(live, again) is False  # while it waits, passes write no status


def test_instance_status_a_refused_update_wins_over_a_waiting_one() -> None:
    views = [
        ItemView("pods", "a", "inst-a", make_pod(name="inst-a"), "waiting", fields=("spec.x",)),
        ItemView("pods", "b", "inst-b", make_pod(name="inst-b"), "pending", fields=("spec.y",)),
    ]
    progressing = cond(instance_status(instance(), views, Observed(), now="T"), "Progressing")
    assert progressing["reason"] == "UpdatePending"
    assert "pods[a]: spec.x" in progressing["message"]


def test_a_starting_pods_newest_normal_event_tells_how_far_it_got():
    scheduled = {
        **event("Scheduled", "assigned to node-1", "2024-01-01T00:00:01Z"),
        "type": "Normal",
    }
    pulling = {**event("Pulling", "pulling image x", "2024-01-01T00:00:02Z"), "type": "Normal"}
    old = {
        **event("Started", "an earlier pod", "2024-01-01T00:00:03Z", uid="gone"),
        "type": "Normal",
    }
    obs = observed_with(pulling, scheduled, old)
    entry = item_status(pod_view(make_pod(phase="Pending")), obs)
    assert entry["parameters"] == {"lastEvent": "Pulling: pulling image x"}
    status = instance_status(instance(), [pod_view(make_pod(phase="Pending"))], obs, now="T1")
    assert cond(status, "Progressing")["message"] == "pod notebook: Pulling: pulling image x"
    running = item_status(pod_view(make_pod()), obs)
    assert "parameters" not in running, "a running pod's history is not status"


def test_a_warning_followed_by_a_normal_step_is_over():
    failed = event("FailedScheduling", "unbound PVCs", "2024-01-01T00:00:01Z")
    scheduled = {**event("Scheduled", "assigned", "2024-01-01T00:00:02Z"), "type": "Normal"}
    pod = make_pod(phase="Pending")
    assert "FailedScheduling" in pod_problems(pod, observed_with(failed))
    entry = item_status(pod_view(pod), observed_with(failed, scheduled))
    assert "errorMessage" not in entry
    assert entry["parameters"] == {"lastEvent": "Scheduled: assigned"}


# --- urgent: what continuous mode writes at once, what it may coalesce ------------------------


def _written(views: list[ItemView], obs: Observed | None = None) -> dict:
    """An instance whose live status is what `views` give (as if written)."""
    status = instance_status(instance(), views, obs or Observed(), now="T0")
    return instance(**status)


def test_progress_alone_is_not_urgent_but_a_verdict_is() -> None:
    starting = make_pod(phase="Pending", ready=False, ip=None)
    live = _written([pvc_view(make_pvc("Pending")), pod_view(starting)])
    scheduled = make_pod(phase="Pending", ready=False, ip="10.0.0.9")
    later = observed_with(event("Pulling", "pulling image", "2024-01-01T00:00:02Z"))
    progress = instance_status(
        live, [pvc_view(make_pvc("Bound")), pod_view(scheduled)], later, now="T1"
    )
    assert needs_write(live, progress)  # something changed (an address, a PVC phase, events)...
    assert not urgent(live, progress)  # ...but nothing the hub waits on
    running = instance_status(live, [pvc_view(make_pvc()), pod_view(make_pod())], later, now="T2")
    assert urgent(live, running)  # Ready: written at once, carrying the address


def test_an_error_a_new_generation_and_a_first_status_beyond_pending_are_urgent() -> None:
    views = [pvc_view(make_pvc()), pod_view(make_pod(phase="Pending", ready=False))]
    fresh = instance()
    assert not urgent(fresh, instance_status(fresh, views, Observed(), now="T1"))  # "pending"
    running = [pvc_view(make_pvc()), pod_view(make_pod())]
    assert urgent(fresh, instance_status(fresh, running, Observed(), now="T1"))
    broken = instance_status(fresh, views, Observed(), now="T1", error="boom", reason="X")
    assert urgent(fresh, broken)
    live = _written(views)
    failed = instance_status(live, views, Observed(), now="T1", error="boom", reason="ApiError")
    assert urgent(live, failed)
    newer = dict(live, metadata={**live["metadata"], "generation": 3})
    assert urgent(live, instance_status(newer, views, Observed(), now="T1"))
