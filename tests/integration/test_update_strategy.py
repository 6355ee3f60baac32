"""Template changes and running servers (updateStrategy) and item patches, on a real apiserver."""

from __future__ import annotations

import pytest
from reconcile_helpers import (
    actions,
    condition,
    edited,
    notebook_container,
    once,
    pod_security_enforced,
    put,
    result_for,
    seed_instance,
    seed_template,
    status_of,
)
from test_controller import running, settings_for

from jupyternetes_ssa.kube import POD, TEMPLATE, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.wait import wait_gone

pytestmark = pytest.mark.integration
NEW_IMAGE = "quay.io/jupyter/base-notebook:hub-5.2.1"
POD_NAME = "jovyan-notebook"


async def running_seed(kube: Kube, ns: str, strategy: str | None = None) -> dict:
    """The seed pair (with the pod item's updateStrategy) reconciled, its pod running."""
    template = seed_template(ns)
    if strategy:
        template["spec"]["pods"][0]["updateStrategy"] = strategy
    await put(kube, template)
    await put(kube, seed_instance(ns, "jovyan"))
    assert (await once(kube, ns)).ok

    async def running() -> bool:
        live = await kube.get(POD, ns, POD_NAME)
        return bool(live) and live.get("status", {}).get("phase") == "Running"

    await wait_for(running, timeout=90, message=f"pod {POD_NAME} Running")
    await once(kube, ns)  # status catches up with the running pod
    return template


def new_image_and_env(template: dict) -> dict:
    def change(t: dict) -> None:
        notebook_container(t).update(image=NEW_IMAGE)
        notebook_container(t)["env"].append({"name": "NEW_SETTING", "value": "1"})

    return edited(template, change)


def with_label(template: dict, **labels: str) -> dict:
    return edited(template, lambda t: t["spec"]["pods"][0].setdefault("labels", {}).update(labels))


def fingerprint(pod: dict) -> tuple:
    """What a restart or a re-create would change."""
    statuses = pod["status"].get("containerStatuses") or [{}]
    return (
        pod["metadata"]["uid"],
        pod["spec"]["containers"][0]["image"],
        statuses[0].get("restartCount"),
        statuses[0].get("image"),
    )


def counting_requests(kube: Kube) -> list[str]:
    """A spy on the one door to the apiserver: every call still goes through."""
    calls: list[str] = []
    original = kube.request

    async def counting(method, *args, **kwargs):
        calls.append(method)
        return await original(method, *args, **kwargs)

    kube.request = counting
    return calls


async def test_by_default_a_running_pod_keeps_running_and_the_change_waits(
    kube: Kube, namespace: str
):
    template = await running_seed(kube, namespace)
    before = await kube.get(POD, namespace, POD_NAME)
    changed = with_label(new_image_and_env(template), team="data")
    await put(kube, changed)

    summary = await once(kube, namespace)

    assert summary.ok, summary  # waiting is the state asked for, not a failure
    assert actions(summary, "jovyan") == {"waiting": 1, "unchanged": 1}
    pod = await kube.get(POD, namespace, POD_NAME)
    assert fingerprint(pod) == fingerprint(before)
    assert all(e["name"] != "NEW_SETTING" for e in pod["spec"]["containers"][0]["env"])
    assert pod["metadata"]["labels"]["team"] == "data"  # metadata restarts nothing: applied
    status = await status_of(kube, namespace, "jovyan")
    progressing = condition(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "UpdatePendingRestart")
    assert (
        "pods[notebook]: spec.containers[0].env, spec.containers[0].image"
        in (progressing["message"])
    )
    assert condition(status, "Ready")["status"] == "True"
    assert "spec.containers[0].image" in status["pods"]["notebook"]["parameters"]["updatePending"]

    # While the update waits, an idle pass costs nothing but its lists.
    calls = counting_requests(kube)
    summary = await once(kube, namespace)
    assert actions(summary, "jovyan") == {"waiting": 1, "unchanged": 1}
    assert not result_for(summary, "jovyan").status_written
    # 5 lists (owned kinds, instances, templates, events) + the sealing keys' Secret and ConfigMap
    assert set(calls) == {"GET"} and len(calls) == 7, calls
    assert (await kube.get(POD, namespace, POD_NAME))["metadata"]["resourceVersion"] == (
        pod["metadata"]["resourceVersion"]
    )


async def test_the_next_start_gets_the_new_template(kube: Kube, namespace: str):
    template = await running_seed(kube, namespace)
    await put(kube, new_image_and_env(template))
    assert actions(await once(kube, namespace), "jovyan")["waiting"] == 1
    old = await kube.get(POD, namespace, POD_NAME)

    await kube.delete(POD, namespace, POD_NAME, uid=old["metadata"]["uid"])  # the pod stops
    assert await wait_gone(kube, POD, namespace, POD_NAME, old["metadata"]["uid"], timeout=90)
    summary = await once(kube, namespace)

    assert summary.ok, summary
    assert actions(summary, "jovyan") == {"created": 1, "unchanged": 1}
    pod = await kube.get(POD, namespace, POD_NAME)
    assert pod["metadata"]["uid"] != old["metadata"]["uid"]
    assert pod["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert {"name": "NEW_SETTING", "value": "1"} in pod["spec"]["containers"][0]["env"]
    progressing = condition(await status_of(kube, namespace, "jovyan"), "Progressing")
    assert progressing["reason"] != "UpdatePendingRestart"


async def test_a_reverted_template_leaves_nothing_waiting_or_stale(kube: Kube, namespace: str):
    template = await running_seed(kube, namespace)
    uid = (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"]
    await put(kube, with_label(new_image_and_env(template), team="data"))
    await once(kube, namespace)

    await put(kube, template)
    summary = await once(kube, namespace)

    assert actions(summary, "jovyan") == {"configured": 1, "unchanged": 1}
    pod = await kube.get(POD, namespace, POD_NAME)
    assert pod["metadata"]["uid"] == uid
    assert "team" not in pod["metadata"]["labels"]  # the label the change had added is gone
    await once(kube, namespace)
    summary = await once(kube, namespace)
    assert actions(summary, "jovyan") == {"unchanged": 2}
    progressing = condition(await status_of(kube, namespace, "jovyan"), "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "Converged")


async def test_in_place_applies_what_kubernetes_allows_and_reports_the_rest(
    kube: Kube, namespace: str
):
    template = await running_seed(kube, namespace, "InPlace")
    uid = (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"]
    image_only = edited(template, lambda t: notebook_container(t).update(image=NEW_IMAGE))
    await put(kube, image_only)

    summary = await once(kube, namespace)

    assert actions(summary, "jovyan") == {"configured": 1, "unchanged": 1}
    pod = await kube.get(POD, namespace, POD_NAME)
    assert (pod["metadata"]["uid"], pod["spec"]["containers"][0]["image"]) == (uid, NEW_IMAGE)

    await put(kube, new_image_and_env(template))
    summary = await once(kube, namespace)

    assert actions(summary, "jovyan") == {"pending": 1, "unchanged": 1}
    assert not summary.ok  # asked for in place, and Kubernetes refused
    progressing = condition(await status_of(kube, namespace, "jovyan"), "Progressing")
    assert progressing["reason"] == "UpdatePending"
    assert "spec.containers[0].env" in progressing["message"]
    assert (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"] == uid


async def test_recreate_replaces_the_pod_for_any_spec_change(kube: Kube, namespace: str):
    template = await running_seed(kube, namespace, "Recreate")
    before = await kube.get(POD, namespace, POD_NAME)
    await put(kube, with_label(template, team="data"))
    summary = await once(kube, namespace)
    assert actions(summary, "jovyan") == {"configured": 1, "unchanged": 1}  # metadata: in place
    assert (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"] == before["metadata"][
        "uid"
    ]

    # An image change Kubernetes would allow in place still means a new pod under Recreate.
    await put(kube, edited(template, lambda t: notebook_container(t).update(image=NEW_IMAGE)))
    summary = await once(kube, namespace)

    assert summary.ok, summary
    assert actions(summary, "jovyan") == {"created": 1, "unchanged": 1}  # once mode re-converges
    pod = await kube.get(POD, namespace, POD_NAME)
    assert pod["metadata"]["uid"] != before["metadata"]["uid"]
    assert pod["spec"]["containers"][0]["image"] == NEW_IMAGE


async def test_the_recreate_pods_flag_makes_every_pod_recreate(kube: Kube, namespace: str):
    template = await running_seed(kube, namespace)
    uid = (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"]
    await put(kube, new_image_and_env(template))

    summary = await once(kube, namespace, recreate_pods=True)

    assert summary.ok, summary
    pod = await kube.get(POD, namespace, POD_NAME)
    assert pod["metadata"]["uid"] != uid
    assert pod["spec"]["containers"][0]["image"] == NEW_IMAGE


async def test_patches_survive_the_crd_and_select_a_flavour(kube: Kube, namespace: str):
    template = seed_template(namespace)
    template["spec"]["pods"][0]["updateStrategy"] = "InPlace"
    template["spec"]["pods"][0]["patches"] = [
        {
            "condition": {"variable": "profile", "equals": "large"},
            "merge": {
                "labels": {"flavour": "large"},
                "spec": {
                    "containers": [
                        {
                            "name": "notebook",
                            "resources": {"limits": {"memory": "{memory}"}},
                            "env": [{"name": "JUPYTERHUB_USER", "value": "patched"}],
                        }
                    ]
                },
            },
        }
    ]
    await put(kube, template)
    stored = await kube.get(TEMPLATE, namespace, "default-template")
    assert stored["spec"]["pods"][0]["patches"] == template["spec"]["pods"][0]["patches"]
    assert stored["spec"]["pods"][0]["updateStrategy"] == "InPlace"
    await put(kube, seed_instance(namespace, "big", profile="large", memory="3Gi"))
    await put(kube, seed_instance(namespace, "small", profile="standard", memory="3Gi"))

    summary = await once(kube, namespace)

    assert summary.ok, summary
    big = await kube.get(POD, namespace, "big-notebook")
    small = await kube.get(POD, namespace, "small-notebook")
    assert big["metadata"]["labels"]["flavour"] == "large"
    assert "flavour" not in small["metadata"]["labels"]
    env = {e["name"]: e.get("value") for e in big["spec"]["containers"][0]["env"]}
    assert env["JUPYTERHUB_USER"] == "patched"
    assert [e["name"] for e in big["spec"]["containers"][0]["env"]].count("JUPYTERHUB_USER") == 1
    assert big["spec"]["containers"][0]["resources"]["limits"]["memory"] == "3Gi"
    assert "limits" not in (small["spec"]["containers"][0].get("resources") or {})


async def test_a_bad_patch_is_an_error_status_and_nothing_is_applied(kube: Kube, namespace: str):
    template = seed_template(namespace)
    template["spec"]["pods"][0]["patches"] = [
        {"merge": {"labels": {"a": "b"}}},
        {"merge": {"spec": {"containers": {"name": "notebook"}}}},
    ]
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace)

    assert result_for(summary, "jovyan").reason == "RenderFailed"
    degraded = condition(await status_of(kube, namespace, "jovyan"), "Degraded")
    assert "pods[notebook].patches[1].merge.spec.containers" in degraded["message"]
    assert await kube.get(POD, namespace, POD_NAME) is None


async def test_recreate_never_deletes_a_pod_for_a_template_the_apiserver_rejects(
    kube: Kube, namespace: str
):
    template = await running_seed(kube, namespace, "Recreate")
    uid = (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"]

    # A fault only admission knows (validation passes it): the namespace now enforces
    # `baseline` and the new pod is privileged. A dry-run update of the running pod cannot see
    # it (pod specs are immutable); the pod is kept only if the re-created one is checked.
    await kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {"pod-security.kubernetes.io/enforce": "baseline"},
            },
        },
        field_manager="test-admin",
    )

    def broken(t: dict) -> None:
        container = notebook_container(t)
        container.update(image=NEW_IMAGE, securityContext={"privileged": True})

    await put(kube, edited(template, broken))
    await wait_for(
        lambda: pod_security_enforced(kube, namespace), timeout=30, message="PSA enforces"
    )
    summary = await once(kube, namespace)

    assert result_for(summary, "jovyan").reason == "ApplyFailed"
    assert "PodSecurity" in result_for(summary, "jovyan").error
    pod = await kube.get(POD, namespace, POD_NAME)
    assert pod["metadata"]["uid"] == uid
    assert not pod["metadata"].get("deletionTimestamp")


async def test_continuous_mode_leaves_a_running_pod_alone_and_starts_the_next_one_new(
    kube: Kube, namespace: str
):
    template = seed_template(namespace)
    await put(kube, template)
    async with running(kube, settings_for(namespace)):
        await put(kube, seed_instance(namespace, "jovyan"))

        async def phase_running() -> bool:
            return (await status_of(kube, namespace, "jovyan")).get("phase") == "Running"

        await wait_for(phase_running, timeout=90, message="jovyan Running")
        uid = (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"]
        await put(kube, new_image_and_env(template))

        async def waiting() -> bool:
            progressing = condition(await status_of(kube, namespace, "jovyan"), "Progressing")
            return progressing.get("reason") == "UpdatePendingRestart"

        await wait_for(waiting, timeout=90, message="status says the update waits")
        pod = await kube.get(POD, namespace, POD_NAME)
        assert pod["metadata"]["uid"] == uid
        assert pod["spec"]["containers"][0]["image"] != NEW_IMAGE

        await kube.delete(POD, namespace, POD_NAME, uid=uid)  # the server stops

        async def new_pod() -> bool:
            live = await kube.get(POD, namespace, POD_NAME)
            return bool(live) and live["metadata"]["uid"] != uid

        await wait_for(new_pod, timeout=90, message="a new pod")
        pod = await kube.get(POD, namespace, POD_NAME)
        assert pod["spec"]["containers"][0]["image"] == NEW_IMAGE


async def test_a_renamed_pod_item_waits_for_the_next_start_too(kube: Kube, namespace: str):
    """Changing an item's resourceName must not restart a running server (nor prune it as an
    item the template no longer lists): the new name is used at the pod's next start."""
    template = await running_seed(kube, namespace, "OnRestart")
    uid = (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"]
    renamed = edited(
        template, lambda t: t["spec"]["pods"][0].update(resourceName="{jupyterhub.user.name}-srv")
    )
    await put(kube, renamed)

    summary = await once(kube, namespace)

    assert not summary.pruned
    assert actions(summary, "jovyan")["waiting"] == 1
    assert (await kube.get(POD, namespace, POD_NAME))["metadata"]["uid"] == uid
    assert await kube.get(POD, namespace, "jovyan-srv") is None
    status = await status_of(kube, namespace, "jovyan")
    assert status["pods"]["notebook"]["resourceName"] == POD_NAME
    assert condition(status, "Progressing")["reason"] == "UpdatePendingRestart"
    again = await once(kube, namespace)  # stable: still waiting, nothing pruned
    assert not again.pruned and actions(again, "jovyan")["waiting"] == 1

    await kube.delete(POD, namespace, POD_NAME, uid=uid)  # the server stops
    await wait_gone(kube, POD, namespace, POD_NAME, uid)
    await once(kube, namespace)
    assert await kube.get(POD, namespace, "jovyan-srv") is not None
