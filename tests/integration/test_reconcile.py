"""The reconciler's once-mode pass against a real apiserver: converge, status, changes, errors."""

from __future__ import annotations

import pytest
from reconcile_helpers import (
    actions,
    condition,
    edited,
    notebook_container,
    once,
    owned,
    put,
    result_for,
    seed_instance,
    seed_template,
    status_of,
)

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.kube import POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.ownership import OWNER

pytestmark = pytest.mark.integration


async def converged_seed(
    kube: Kube, ns: str, name: str = "jovyan", strategy: str | None = None
) -> tuple[dict, dict]:
    """The seed pair applied and reconciled once, with its pod running."""
    template, instance = seed_template(ns), seed_instance(ns, name)
    if strategy:
        template["spec"]["pods"][0]["updateStrategy"] = strategy
    await put(kube, template)
    await put(kube, instance)
    summary = await once(kube, ns)
    assert summary.ok, summary
    await wait_for(
        lambda: _running(kube, ns, f"{name}-notebook"),
        timeout=60,
        message=f"pod {name}-notebook Running",
    )
    return template, instance


async def _running(kube: Kube, ns: str, pod: str) -> bool:
    live = await kube.get(POD, ns, pod)
    return bool(live) and live.get("status", {}).get("phase") == "Running"


def managers(obj: dict) -> dict[str, str]:
    return {m["manager"]: m["operation"] for m in obj["metadata"].get("managedFields", [])}


async def test_seed_converges_with_server_side_apply(kube: Kube, namespace: str):
    template, instance = seed_template(namespace), seed_instance(namespace, "jovyan")
    await put(kube, template)
    live_instance = await put(kube, instance)

    summary = await once(kube, namespace)

    assert summary.ok
    assert actions(summary, "jovyan") == {"created": 2}
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    pvc = await kube.get(PVC, namespace, "jovyan-workspace")
    assert managers(pod)[FIELD_MANAGER] == "Apply"
    assert managers(pvc)[FIELD_MANAGER] == "Apply"
    record = f"{namespace}/jovyan/{live_instance['metadata']['uid']}"
    assert pod["metadata"]["annotations"][OWNER] == record == pvc["metadata"]["annotations"][OWNER]
    assert pod["metadata"]["labels"][labels.MANAGED_BY] == "jupyternetes-ssa"
    assert pod["metadata"]["labels"]["jupyternetes.kadense.io/userId"] == "1"
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "JupyterNotebookInstance",
        live_instance["metadata"]["uid"],
        True,
    )
    assert "ownerReferences" not in pvc["metadata"]
    volume = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert volume == "jovyan-workspace"
    status = await status_of(kube, namespace, "jovyan")
    assert status["pvcsProvisioned"] == "Completed"
    assert status["podsProvisioned"] == "Completed"
    assert status["pods"]["notebook"]["resourceName"] == "jovyan-notebook"
    assert status["observedGeneration"] == live_instance["metadata"]["generation"]


async def test_a_field_dropped_after_creation_is_removed_by_the_next_apply(
    kube: Kube, namespace: str
):
    """Objects are created by a guarded apply (never a plain create, whose Update entry would
    own the defaults and keep dropped fields), so a field the template drops goes."""
    template = seed_template(namespace)
    template["spec"]["pods"][0]["labels"]["extra"] = "yes"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))
    assert (await once(kube, namespace)).ok

    del template["spec"]["pods"][0]["labels"]["extra"]
    await put(kube, template)
    summary = await once(kube, namespace)

    assert actions(summary, "jovyan")["configured"] == 1
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert "extra" not in pod["metadata"]["labels"]
    assert managers(pod)[FIELD_MANAGER] == "Apply"


async def test_status_follows_the_pod_to_running(kube: Kube, namespace: str):
    await converged_seed(kube, namespace)

    summary = await once(kube, namespace)

    assert result_for(summary, "jovyan").status_written
    status = await status_of(kube, namespace, "jovyan")
    assert status["phase"] == "Running"
    notebook = status["pods"]["notebook"]
    assert notebook["state"] == "Running"
    assert notebook["podAddress"].startswith("127.")
    assert notebook["portNumber"] == 8888
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Degraded")["status"] == "False"


async def test_steady_state_costs_no_writes(kube: Kube, namespace: str):
    await converged_seed(kube, namespace)
    await once(kube, namespace)  # status catches up with the running pod
    before = [
        await kube.get(r, namespace, n)
        for r, n in ((POD, "jovyan-notebook"), (PVC, "jovyan-workspace"))
    ]
    calls: list[str] = []
    original = kube.request

    async def counting(method, *args, **kwargs):  # a spy: every call still goes to the apiserver
        calls.append(method)
        return await original(method, *args, **kwargs)

    kube.request = counting
    summary = await once(kube, namespace)

    assert actions(summary, "jovyan") == {"unchanged": 2}
    assert not result_for(summary, "jovyan").status_written
    assert set(calls) == {"GET"}, calls
    # one list per kind (instances, templates, pods, PVCs, events), and the sealing keys' Secret
    # and public-key ConfigMap, read at the start of every once-mode pass (tokens.prepare)
    assert len(calls) == 7
    after = [
        await kube.get(r, namespace, n)
        for r, n in ((POD, "jovyan-notebook"), (PVC, "jovyan-workspace"))
    ]
    assert [o["metadata"]["resourceVersion"] for o in after] == [
        o["metadata"]["resourceVersion"] for o in before
    ]


async def test_image_change_is_applied_in_place(kube: Kube, namespace: str):
    template, _ = await converged_seed(kube, namespace, strategy="InPlace")
    pod_before = await kube.get(POD, namespace, "jovyan-notebook")

    await put(
        kube,
        edited(
            template,
            lambda t: notebook_container(t).update(image="quay.io/jupyter/base-notebook:hub-5.2.1"),
        ),
    )
    summary = await once(kube, namespace)

    assert actions(summary, "jovyan") == {"configured": 1, "unchanged": 1}
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod["metadata"]["uid"] == pod_before["metadata"]["uid"]
    assert pod["spec"]["containers"][0]["image"] == "quay.io/jupyter/base-notebook:hub-5.2.1"


async def test_forbidden_pod_change_is_reported_then_recreated_on_request(
    kube: Kube, namespace: str
):
    template, _ = await converged_seed(kube, namespace, strategy="InPlace")
    uid = (await kube.get(POD, namespace, "jovyan-notebook"))["metadata"]["uid"]
    changed = edited(
        template,
        lambda t: notebook_container(t)["env"].append({"name": "NEW_SETTING", "value": "1"}),
    )
    await put(kube, changed)

    summary = await once(kube, namespace)

    assert actions(summary, "jovyan") == {"pending": 1, "unchanged": 1}
    assert (await kube.get(POD, namespace, "jovyan-notebook"))["metadata"]["uid"] == uid
    progressing = condition(await status_of(kube, namespace, "jovyan"), "Progressing")
    assert progressing["reason"] == "UpdatePending"
    assert "spec.containers[0].env" in progressing["message"]
    assert "--recreate-pods" in progressing["message"]

    summary = await once(kube, namespace, recreate_pods=True)

    assert summary.ok, summary
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod["metadata"]["uid"] != uid
    assert {"name": "NEW_SETTING", "value": "1"} in pod["spec"]["containers"][0]["env"]


async def test_field_removed_from_template_is_removed_from_live_object(kube: Kube, namespace: str):
    template, _ = await converged_seed(kube, namespace)
    with_label = edited(template, lambda t: t["spec"]["pods"][0]["labels"].update(team="a"))
    await put(kube, with_label)
    await once(kube, namespace)
    assert (await kube.get(POD, namespace, "jovyan-notebook"))["metadata"]["labels"]["team"] == "a"

    await put(kube, template)
    summary = await once(kube, namespace)

    assert actions(summary, "jovyan")["configured"] == 1
    assert "team" not in (await kube.get(POD, namespace, "jovyan-notebook"))["metadata"]["labels"]


async def test_pvc_grows_in_place_and_a_shrink_is_reported_not_applied(kube: Kube, namespace: str):
    template, _ = await converged_seed(kube, namespace)
    uid = (await kube.get(PVC, namespace, "jovyan-workspace"))["metadata"]["uid"]

    def storage(size):
        return lambda t: t["spec"]["pvcs"][0]["spec"]["resources"]["requests"].update(storage=size)

    await put(kube, edited(template, storage("2Gi")))
    summary = await once(kube, namespace)
    assert actions(summary, "jovyan")["configured"] == 1
    pvc = await kube.get(PVC, namespace, "jovyan-workspace")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"

    await put(kube, edited(template, storage("500Mi")))
    summary = await once(kube, namespace)  # records the new template (its hash), size kept
    assert actions(summary, "jovyan")["failed"] == 0
    summary = await once(kube, namespace)

    assert actions(summary, "jovyan")["pending"] == 1
    pvc = await kube.get(PVC, namespace, "jovyan-workspace")
    assert pvc["metadata"]["uid"] == uid
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    status = await status_of(kube, namespace, "jovyan")
    assert (
        "spec.resources.requests.storage"
        in status["pvcs"]["workspace"]["parameters"]["updatePending"]
    )


async def test_bad_instances_get_an_error_status_and_never_stop_the_others(
    kube: Kube, namespace: str
):
    template = seed_template(namespace)
    unknown_var = edited(
        template, lambda t: notebook_container(t).update(workingDir="/home/{jupyterhub.user.nme}")
    )
    unknown_var["metadata"]["name"] = "typo-template"
    invalid = edited(template, lambda t: notebook_container(t).update(imagePullPolice="Always"))
    invalid["metadata"]["name"] = "invalid-template"
    for obj in (template, unknown_var, invalid):
        await put(kube, obj)
    await put(kube, seed_instance(namespace, "good"))
    await put(kube, seed_instance(namespace, "no-template", template="missing"))
    await put(kube, seed_instance(namespace, "typo", template="typo-template"))
    await put(kube, seed_instance(namespace, "invalid", template="invalid-template"))

    summary = await once(kube, namespace)

    assert not summary.ok
    assert result_for(summary, "good").converged
    expectations = {
        "no-template": ("TemplateNotFound", "missing"),
        "typo": ("RenderFailed", "jupyterhub.user.nme"),
        "invalid": ("RenderFailed", "imagePullPolice"),  # found offline, before any request
    }
    for name, (reason, words) in expectations.items():
        assert result_for(summary, name).reason == reason
        degraded = condition(await status_of(kube, namespace, name), "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", reason)
        assert words in degraded["message"]
        pods, pvcs = await owned(kube, namespace, name)
        assert (pods, pvcs) == ([], []), f"{name}: nothing may be half-applied"
    typo = condition(await status_of(kube, namespace, "typo"), "Degraded")["message"]
    assert "pods[notebook].spec.containers[0].workingDir" in typo
    pods, _ = await owned(kube, namespace, "good")
    assert [p["metadata"]["name"] for p in pods] == ["good-notebook"]


async def test_templates_outside_the_allowed_namespaces_are_refused(kube: Kube, namespace: str):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace, template_namespaces=("approved-templates",))

    assert result_for(summary, "jovyan").reason == "TemplateNotAllowed"
    degraded = condition(await status_of(kube, namespace, "jovyan"), "Degraded")
    assert "--template-namespace" in degraded["message"]
    assert await owned(kube, namespace, "jovyan") == ([], [])


async def test_another_managers_change_to_our_field_is_taken_back(kube: Kube, namespace: str):
    await converged_seed(kube, namespace)
    hijack = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "jovyan-notebook",
            "namespace": namespace,
            "labels": {"jupyternetes.kadense.io/userId": "666"},
        },
    }
    await kube.apply(hijack, field_manager="intruder", force=True)

    summary = await once(kube, namespace)

    assert actions(summary, "jovyan")["configured"] == 1
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod["metadata"]["labels"]["jupyternetes.kadense.io/userId"] == "1"


async def test_a_rejected_first_object_holds_back_the_rest(kube: Kube, namespace: str):
    """The first change is applied without a dry-run: its rejection must still write nothing."""
    template = seed_template(namespace)
    # Only the apiserver knows this one (class names are not checked offline).
    template["spec"]["pvcs"][0]["spec"]["storageClassName"] = "Not_A_Class"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace)

    result = result_for(summary, "jovyan")
    assert result.reason == "ApplyFailed"
    assert "storageClassName" in result.error
    assert actions(summary, "jovyan") == {"failed": 2}
    held = next(o for o in result.outcomes if o.item.section == "pods")
    assert held.message.startswith("held back")
    assert await owned(kube, namespace, "jovyan") == ([], [])
