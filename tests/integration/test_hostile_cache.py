"""Hostile review of the caching/diff performance changes (issue 16): real apiserver, no mocks.

Every pass here is a real `reconcile_once` against the local cluster; "idle" means the pass left
every object `unchanged` (no apply, no waiting report) and the objects' resourceVersions stand.
"""

from __future__ import annotations

import asyncio
import copy

from reconcile_helpers import (
    actions,
    condition,
    get_template,
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
from jupyternetes_ssa.controller import Controller
from jupyternetes_ssa.kube import POD, PVC
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.managed import applied_by
from jupyternetes_ssa.observe import cached
from jupyternetes_ssa.settings import Settings


async def _start(kube, namespace: str, template: dict, name: str = "alice") -> None:
    await put(kube, template)
    await put(kube, seed_instance(namespace, name))
    summary = await once(kube, namespace)
    assert actions(summary, name)["created"] == 2, result_for(summary, name).outcomes


async def _versions(kube, namespace: str, name: str = "alice") -> dict[str, tuple]:
    """Per object: its generation and when our last apply changed it (the kubelet's and the
    binder's status writes move resourceVersion, not these)."""
    pods, pvcs = await owned(kube, namespace, name)
    return {
        o["kind"] + "/" + o["metadata"]["name"]: (
            o["metadata"].get("generation"),
            [
                e.get("time")
                for e in o["metadata"].get("managedFields") or []
                if e["manager"] == FIELD_MANAGER and not e.get("subresource")
            ],
        )
        for o in pods + pvcs
    }


async def _template(kube, namespace: str) -> dict:
    """The live template as the admin would edit and re-apply it."""
    live = await get_template(kube, namespace)
    live["metadata"] = {k: live["metadata"][k] for k in ("name", "namespace")}
    live.pop("status", None)
    return live


async def _assert_idle(kube, namespace: str, name: str = "alice") -> None:
    """A second and third pass on an unchanged cluster: nothing applied, nothing reported."""
    before = await _versions(kube, namespace, name)
    for _ in range(2):
        summary = await once(kube, namespace)
        outcomes = result_for(summary, name).outcomes
        assert {o.action for o in outcomes} == {"unchanged"}, [
            (o.item.ref, o.action, o.message, o.fields) for o in outcomes
        ]
    assert await _versions(kube, namespace, name) == before
    progressing = condition(await status_of(kube, namespace, name), "Progressing")
    assert not progressing.get("reason", "").startswith("UpdatePending"), progressing


# --- apiserver rewrites that must not look like drift ---------------------------------------


async def test_probe_with_zero_initial_delay_is_idle(cluster, namespace):
    """`initialDelaySeconds: 0` is an int32 with omitempty: the apiserver drops it. A template
    that spells out the default must not be taken for a change on every pass."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["readinessProbe"] = {
        "tcpSocket": {"port": 8888},
        "initialDelaySeconds": 0,
        "periodSeconds": 10,
    }
    await _start(kube, namespace, template)
    await _assert_idle(kube, namespace)


async def test_host_port_zero_is_idle(cluster, namespace):
    """`hostPort: 0` (omitempty int): same rewrite as above on a list item matched by merge key."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["ports"][0]["hostPort"] = 0
    await _start(kube, namespace, template)
    await _assert_idle(kube, namespace)


async def test_odd_quantity_spellings_are_idle(cluster, namespace):
    """0.5Gi, 1000m, 1e3, 1000Mi: stored canonicalised (512Mi, 1, 1k); no endless re-apply."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["resources"] = {
        "requests": {"cpu": "1000m", "memory": "1e3"},
        "limits": {"cpu": "1.5", "memory": "1000Mi"},
    }
    template["spec"]["pvcs"][0]["spec"]["resources"]["requests"]["storage"] = "0.5Gi"
    await _start(kube, namespace, template)
    _, pvcs = await owned(kube, namespace, "alice")
    assert pvcs[0]["spec"]["resources"]["requests"]["storage"] == "512Mi"  # rewritten indeed
    await _assert_idle(kube, namespace)


async def test_env_resource_field_divisor_spelling_is_idle(cluster, namespace):
    """An env entry with valueFrom.resourceFieldRef: its `divisor` is a quantity too, and the
    apiserver canonicalises it (1000m -> 1, 1024Ki -> 1Mi) outside any `.resources.` path."""
    kube = cluster.kube
    template = seed_template(namespace)
    container = notebook_container(template)
    container["resources"] = {"limits": {"memory": "1Gi", "cpu": "1"}}
    container["env"] += [
        {
            "name": "MEM_LIMIT_MI",
            "valueFrom": {
                "resourceFieldRef": {
                    "containerName": "notebook",
                    "resource": "limits.memory",
                    "divisor": "1024Ki",
                }
            },
        },
        {
            "name": "CPU_LIMIT",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1000m"}},
        },
    ]
    await _start(kube, namespace, template)
    pods, _ = await owned(kube, namespace, "alice")
    env = {e["name"]: e for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["MEM_LIMIT_MI"]["valueFrom"]["resourceFieldRef"]["divisor"] == "1Mi"
    await _assert_idle(kube, namespace)


async def test_env_value_from_and_empty_values_are_idle(cluster, namespace):
    """valueFrom.fieldRef (the server adds apiVersion), `value: ""` (omitted), `readOnly: false`
    (omitted): idle after the create."""
    kube = cluster.kube
    template = seed_template(namespace)
    container = notebook_container(template)
    container["env"] += [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "EMPTY_ONE", "value": ""},
    ]
    container["volumeMounts"][0]["readOnly"] = False
    template["spec"]["pods"][0]["spec"]["nodeSelector"] = {}
    await _start(kube, namespace, template)
    await _assert_idle(kube, namespace)


# --- list merge keys ------------------------------------------------------------------------


async def test_ports_same_number_two_protocols_cache_and_idle(cluster, namespace):
    """ports merge on containerPort+protocol: 8888/TCP and 8888/UDP are two elements. The cache
    (picked from managedFields by the k: lookup table) must keep both, and the pass is idle."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["ports"] = [
        {"containerPort": 8888, "name": "http", "protocol": "TCP"},
        {"containerPort": 8888, "name": "http-udp", "protocol": "UDP"},
        {"containerPort": 9000},  # protocol defaulted by the server: the key holds TCP
    ]
    await _start(kube, namespace, template)
    pods, _ = await owned(kube, namespace, "alice")
    ours = applied_by(cached(copy.deepcopy(pods[0])), FIELD_MANAGER)
    ports = ours["spec"]["containers"][0]["ports"]
    assert [(p["containerPort"], p.get("protocol")) for p in ports] == [
        (8888, "TCP"),
        (8888, "UDP"),
        (9000, None),  # the server's default is not ours; the element is
    ]
    await _assert_idle(kube, namespace)


async def test_template_ports_change_is_reported_under_on_restart(cluster, namespace):
    """A template change to one of two ports of the same number is seen (UpdatePendingRestart,
    naming the port) and writes nothing to the running pod."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["ports"] = [
        {"containerPort": 8888, "name": "http", "protocol": "TCP"},
        {"containerPort": 8888, "name": "http-udp", "protocol": "UDP"},
    ]
    await _start(kube, namespace, template)
    before = await _versions(kube, namespace)
    live_template = await _template(kube, namespace)
    notebook_container(live_template)["ports"][1]["name"] = "udp2"
    await put(kube, live_template)
    for _ in range(2):
        summary = await once(kube, namespace)
        pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
        assert pod.action == "waiting", (pod.action, pod.message)
        assert any("ports" in f for f in pod.fields), pod.fields
    assert await _versions(kube, namespace) == before
    progressing = condition(await status_of(kube, namespace, "alice"), "Progressing")
    assert progressing["reason"] == "UpdatePendingRestart", progressing


# --- template edits on running servers ------------------------------------------------------


async def test_in_place_image_change_applied_once_then_idle(cluster, namespace):
    kube = cluster.kube
    template = seed_template(namespace)
    template["spec"]["pods"][0]["updateStrategy"] = "InPlace"
    await _start(kube, namespace, template)
    live_template = await _template(kube, namespace)
    notebook_container(live_template)["image"] = "quay.io/jupyter/base-notebook:hub-5.2.1"
    await put(kube, live_template)
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    assert pod.action == "configured", (pod.action, pod.message)
    pods, _ = await owned(kube, namespace, "alice")
    assert pods[0]["spec"]["containers"][0]["image"].startswith("quay.io/jupyter/base-notebook")
    await _assert_idle(kube, namespace)


async def test_on_restart_resource_change_waits_without_writes(cluster, namespace):
    """A template quantity change (0.5Gi -> 0.75Gi memory) on a running pod: seen, reported,
    and nothing written (the canonicalisation must neither hide it nor invent one)."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["resources"] = {"requests": {"memory": "0.5Gi"}}
    await _start(kube, namespace, template)
    await _assert_idle(kube, namespace)
    before = await _versions(kube, namespace)
    live_template = await _template(kube, namespace)
    notebook_container(live_template)["resources"]["requests"]["memory"] = "0.75Gi"
    await put(kube, live_template)
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    assert pod.action == "waiting", (pod.action, pod.message)
    assert pod.fields == ("spec.containers[0].resources.requests.memory",), pod.fields
    assert await _versions(kube, namespace) == before
    # ... and a change back to an equal quantity in another spelling changes no spec: at most
    # one apply (our hash annotation), no restart, then idle
    notebook_container(live_template)["resources"]["requests"]["memory"] = "512Mi"
    await put(kube, live_template)
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    assert pod.action in ("configured", "unchanged"), (pod.action, pod.message, pod.fields)
    await _assert_idle(kube, namespace)


# --- other managers on our fields -----------------------------------------------------------


async def _patch(kube, res, namespace: str, name: str, body: dict, manager: str) -> dict:
    """What kubectl label/annotate/edit send: a strategic merge patch (an Update)."""
    path = f"/api/v1/namespaces/{namespace}/{res.plural}/{name}"
    return await kube.call(
        "PATCH",
        path,
        body=body,
        params={"fieldManager": manager},
        content_type="application/strategic-merge-patch+json",
    )


async def test_admin_overwrites_our_label_then_repaired_and_idle(cluster, namespace):
    """`kubectl label --overwrite` of a label we set (an Update: the field moves to kubectl):
    the next pass puts ours back, keeps the admin's own label, and the pass after is idle."""
    kube = cluster.kube
    template = seed_template(namespace)
    await _start(kube, namespace, template)
    pods, pvcs = await owned(kube, namespace, "alice")
    for res, obj in ((POD, pods[0]), (PVC, pvcs[0])):
        await _patch(
            kube,
            res,
            namespace,
            obj["metadata"]["name"],
            {
                "metadata": {
                    "labels": {"jupyternetes.kadense.io/userId": "mallory", "admin/extra": "x"}
                }
            },
            "kubectl-label",
        )
    summary = await once(kube, namespace)
    assert actions(summary, "alice")["configured"] == 2, result_for(summary, "alice").outcomes
    pods, pvcs = await owned(kube, namespace, "alice")
    for obj in (pods[0], pvcs[0]):
        lbl = obj["metadata"]["labels"]
        assert lbl["jupyternetes.kadense.io/userId"] != "mallory", lbl
        assert lbl["admin/extra"] == "x"
        assert lbl[labels.MANAGED_BY] == labels.MANAGED_BY_VALUE
    await _assert_idle(kube, namespace)


async def test_admin_edits_image_in_place_pod_is_repaired(cluster, namespace):
    """`kubectl edit` of the image of an InPlace pod (the field moves to kubectl-edit): our
    image is put back by the next pass, and then it is idle."""
    kube = cluster.kube
    template = seed_template(namespace)
    template["spec"]["pods"][0]["updateStrategy"] = "InPlace"
    await _start(kube, namespace, template)
    pods, _ = await owned(kube, namespace, "alice")
    ours = pods[0]["spec"]["containers"][0]["image"]
    await _patch(
        kube,
        POD,
        namespace,
        pods[0]["metadata"]["name"],
        {"spec": {"containers": [{"name": "notebook", "image": "evil/miner:latest"}]}},
        "kubectl-edit",
    )
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    assert pod.action == "configured", (pod.action, pod.message, pod.fields)
    pods, _ = await owned(kube, namespace, "alice")
    assert pods[0]["spec"]["containers"][0]["image"] == ours
    await _assert_idle(kube, namespace)


# --- the create path's cache (rendered manifest vs managedFields) ---------------------------


async def test_cache_from_rendered_equals_cache_from_managed_fields(cluster, namespace):
    """observe.cached(answer, rendered) must describe what we applied exactly as
    cached(answer) does (picked from managedFields), whatever the server rewrote or added
    (a LimitRange's defaults, the token volume, canonical quantities, omitted empties)."""
    kube = cluster.kube
    await _limit_range(kube, namespace)

    def pod(name: str, **container) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE},
            },
            "spec": {
                "containers": [{"name": "c", "image": "busybox", **container}],
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
            },
        }

    cases = [
        pod("plain"),
        pod("quantity", resources={"limits": {"memory": "0.5Gi"}}),
        pod("empty", env=[{"name": "E", "value": ""}], stdin=False),
        pod("ports", ports=[{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]),
    ]
    for rendered in cases:
        answer = await kube.apply(copy.deepcopy(rendered))
        from_rendered = applied_by(cached(copy.deepcopy(answer), rendered), FIELD_MANAGER)
        from_fields = applied_by(cached(copy.deepcopy(answer)), FIELD_MANAGER)
        for got in (from_rendered, from_fields):
            got.get("metadata", {}).pop("annotations", None)
        assert from_rendered["spec"] == from_fields["spec"], rendered["metadata"]["name"]


async def test_duplicate_env_names_settle(cluster, namespace):
    """Two env entries of one name (the apiserver accepts them; the last wins in the container).
    managedFields records the key once: the cache must still hold both entries with their values,
    so the pass after the create is idle (or the template is refused with a clear error)."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["env"] += [
        {"name": "DUP", "value": "first"},
        {"name": "DUP", "value": "second"},
    ]
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    summary = await once(kube, namespace)
    outcomes = result_for(summary, "alice").outcomes
    if any(o.action == "failed" for o in outcomes):  # refused: must say which field and why
        failed = next(o for o in outcomes if o.action == "failed")
        assert "env" in failed.message and "DUP" in failed.message, failed.message
        return
    pods, _ = await owned(kube, namespace, "alice")
    ours = applied_by(cached(copy.deepcopy(pods[0])), FIELD_MANAGER)
    dup = [e for e in ours["spec"]["containers"][0]["env"] if e.get("name") == "DUP"]
    assert dup == [{"name": "DUP", "value": "first"}, {"name": "DUP", "value": "second"}], dup
    await _assert_idle(kube, namespace)


# --- continuous mode: the informers' cached copies ------------------------------------------


class _Running:
    """A Controller run in-process over one namespace (no health server), with its metrics."""

    def __init__(self, kube, namespace: str, **settings):
        settings = {"resync_seconds": 1.0, "health_port": 0, **settings}
        self.controller = Controller(
            kube, Settings(namespaces=(namespace,), key_namespace=namespace, **settings)
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def sample(self, name: str, **label: str) -> float:
        return self.controller.metrics.registry.get_sample_value(name, label or None) or 0.0

    def writes(self) -> dict[str, float]:
        """Applies other than `unchanged`, and status writes."""
        applies = {
            a: self.sample("jupyternetes_applies_total", action=a)
            for a in ("created", "configured", "recreating", "pending", "failed")
        }
        return {**applies, "status": self.sample("jupyternetes_status_writes_total")}

    def reconciles(self) -> float:
        return sum(
            s.value
            for m in self.controller.metrics.registry.collect()
            if m.name == "jupyternetes_reconciles"
            for s in m.samples
            if s.name.endswith("_total")
        )

    async def __aenter__(self):
        self.task = asyncio.create_task(self.controller.run(self.stop))
        await wait_for(self.controller.synced, timeout=120, message="controller synced")
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        assert await asyncio.wait_for(self.task, 60) == 0

    async def quiet(self, passes: int = 3) -> dict[str, float]:
        """Writes made while `passes` more resync rounds reconcile the instance."""
        before, start = self.writes(), self.reconciles()
        await wait_for(
            lambda: self.reconciles() >= start + passes, timeout=120, message="resync passes"
        )
        after = self.writes()
        return {k: after[k] - before[k] for k in after if after[k] != before[k]}


async def _ready(kube, namespace: str, name: str = "alice") -> dict:
    async def ready():
        status = await status_of(kube, namespace, name)
        return status if condition(status, "Ready").get("status") == "True" else None

    return await wait_for(ready, timeout=180, interval=0.5, message=f"{name} Ready")


async def test_continuous_idle_resyncs_write_nothing(cluster, namespace):
    """Created in continuous mode (cached from the rendered manifest, own watch events reused),
    then resync after resync: no apply, no status write."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    async with _Running(kube, namespace) as running:
        await put(kube, seed_instance(namespace, "alice"))
        await _ready(kube, namespace)
        await running.quiet(2)  # the last status write for Ready may still be on its way
        versions = await _versions(kube, namespace)
        assert await running.quiet(4) == {}
        assert await _versions(kube, namespace) == versions


async def test_continuous_restart_with_existing_objects_writes_nothing(cluster, namespace):
    """A reconciler restarts over a settled server: no apply, no status write, no flap."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "alice"))
    async with _Running(kube, namespace) as running:
        await _ready(kube, namespace)
        await running.quiet(2)
    status = await status_of(kube, namespace, "alice")
    versions = await _versions(kube, namespace)
    async with _Running(kube, namespace) as running:
        assert await running.quiet(4) == {}
    assert await _versions(kube, namespace) == versions
    assert await status_of(kube, namespace, "alice") == status


async def test_continuous_template_change_on_restart_reported_no_storm(cluster, namespace):
    """A template image change on a running OnRestart server: reported UpdatePendingRestart
    with the field, the pod untouched, and the report written once (not every resync)."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    async with _Running(kube, namespace) as running:
        await put(kube, seed_instance(namespace, "alice"))
        await _ready(kube, namespace)
        await running.quiet(2)
        versions = await _versions(kube, namespace)
        live_template = await _template(kube, namespace)
        notebook_container(live_template)["image"] = "quay.io/jupyter/base-notebook:hub-5.2.1"
        await put(kube, live_template)

        async def pending():
            status = await status_of(kube, namespace, "alice")
            reason = condition(status, "Progressing").get("reason")
            return status if reason == "UpdatePendingRestart" else None

        status = await wait_for(pending, timeout=60, interval=0.3, message="UpdatePendingRestart")
        assert "spec.containers[0].image" in condition(status, "Progressing")["message"]
        await running.quiet(2)
        assert await running.quiet(4) == {}
        assert await _versions(kube, namespace) == versions


async def test_continuous_admin_label_overwrite_repaired_once(cluster, namespace):
    """`kubectl label --overwrite` on our pod while the reconciler runs: repaired from the
    watch event (the cached copy must not hide it), then quiet."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    async with _Running(kube, namespace, resync_seconds=300.0) as running:
        await put(kube, seed_instance(namespace, "alice"))
        await _ready(kube, namespace)
        pods, _ = await owned(kube, namespace, "alice")
        name = pods[0]["metadata"]["name"]
        ours = pods[0]["metadata"]["labels"]["jupyternetes.kadense.io/userId"]
        await _patch(
            kube,
            POD,
            namespace,
            name,
            {"metadata": {"labels": {"jupyternetes.kadense.io/userId": "mallory"}}},
            "kubectl-label",
        )

        async def repaired():
            pod = await kube.get(POD, namespace, name)
            return pod["metadata"]["labels"]["jupyternetes.kadense.io/userId"] == ours

        await wait_for(repaired, timeout=60, interval=0.3, message="label repaired")
        configured = running.sample("jupyternetes_applies_total", action="configured")
        assert configured >= 1


# --- render errors after the path-less first walk -------------------------------------------


async def test_render_errors_name_the_field(cluster, namespace):
    """Each template error names the instance, the field path and a fix, while a good instance
    in the same namespace is still served."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "alice"))

    def unknown_in_nested_list_key(t):
        t["spec"]["pods"][0]["spec"]["topologySpreadConstraints"] = [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
            {
                "maxSkew": 1,
                "topologyKey": "zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"{jupyterhub.usr.name}": "x"}},
            },
        ]

    def keys_collide(t):
        t["spec"]["pods"][0]["annotations"] = {"{jupyterhub.user.name}": "1", "dup": "2"}

    def stray_brace_in_list(t):
        notebook_container(t)["args"] = ["--a", ["--nested", "oops}"]]

    cases = {
        "n1": (
            unknown_in_nested_list_key,
            "pods[notebook].spec.topologySpreadConstraints[1].labelSelector.matchLabels"
            ' key "{jupyterhub.usr.name}"',
            "jupyterhub.user.name",
        ),
        "n2": (keys_collide, "pods[notebook].annotations", "make the keys differ"),
        "n3": (stray_brace_in_list, "pods[notebook].spec.containers[0].args[1][1]", "unmatched"),
    }
    for name, (change, _, _) in cases.items():
        variables = {"jupyterhub.user.name": "dup"} if name == "n2" else {}
        template = seed_template(namespace, name=f"t-{name}")
        change(template)
        await put(kube, template)
        await put(kube, seed_instance(namespace, name, template=f"t-{name}", **variables))
    summary = await once(kube, namespace)
    assert actions(summary, "alice")["created"] == 2
    for name, (_, path, hint) in cases.items():
        result = result_for(summary, name)
        assert result.reason == "RenderFailed", (name, result.reason, result.error)
        assert not result.outcomes, name
        assert f"at {path}" in result.error, (name, result.error)
        assert hint.lower() in result.error.lower(), (name, result.error)


async def test_admin_grows_pvc_not_fought_every_pass(cluster, namespace):
    """An admin grows a user's claim (`kubectl patch pvc ... storage: 2Gi`, an Update: the field
    moves to kubectl-patch). We cannot shrink it back; the pass may report that, but an idle pass
    after it must not send the same refused apply again and again."""
    kube = cluster.kube
    await _start(kube, namespace, seed_template(namespace))

    async def bound():
        await once(kube, namespace)  # once mode: each pass writes the status it sees
        _, pvcs = await owned(kube, namespace, "alice")
        return pvcs[0].get("status", {}).get("phase") == "Bound"

    await wait_for(bound, timeout=180, interval=1.0, message="claim Bound")
    _, pvcs = await owned(kube, namespace, "alice")
    await _patch(
        kube,
        PVC,
        namespace,
        pvcs[0]["metadata"]["name"],
        {"spec": {"resources": {"requests": {"storage": "2Gi"}}}},
        "kubectl-patch",
    )
    seen, sent = [], []
    real = kube.apply

    async def counted(obj, **kw):  # a spy: counts the claim's real applies, sends every one
        if obj.get("kind") == "PersistentVolumeClaim" and not kw.get("dry_run"):
            sent.append(obj["metadata"]["name"])
        return await real(obj, **kw)

    kube.apply = counted
    try:
        for _ in range(3):
            summary = await once(kube, namespace)
            pvc = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pvcs")
            seen.append((pvc.action, pvc.message[:120], pvc.fields))
    finally:
        kube.apply = real
    _, pvcs = await owned(kube, namespace, "alice")
    assert pvcs[0]["spec"]["resources"]["requests"]["storage"] == "2Gi"  # never shrunk
    # the refused apply was sent (and logged, and evented) on every idle pass: now the
    # difference is told (pending, naming the field) and nothing is asked of the apiserver
    assert all(s[0] == "pending" and "never shrinks" in s[1] for s in seen), seen
    assert seen[-1][2] == ("spec.resources.requests.storage",), seen
    assert sent == [], sent  # nothing written (the contested field costs a dry-run: README)


async def test_continuous_fresh_server_with_zero_probe_delay_not_update_pending(cluster, namespace):
    """A brand-new server whose template spells `initialDelaySeconds: 0`: once Ready its status
    must not say an update waits for a restart (the template never changed)."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["livenessProbe"] = {
        "tcpSocket": {"port": 8888},
        "initialDelaySeconds": 0,
    }
    await put(kube, template)
    async with _Running(kube, namespace) as running:
        await put(kube, seed_instance(namespace, "alice"))
        status = await _ready(kube, namespace)
        await running.quiet(2)
        status = await status_of(kube, namespace, "alice")
        progressing = condition(status, "Progressing")
        assert progressing.get("reason") != "UpdatePendingRestart", progressing


async def test_admin_annotation_of_its_own_is_not_fought(cluster, namespace):
    """`kubectl annotate pod ... admin/note=x` (not a field of ours): no apply, kept."""
    kube = cluster.kube
    await _start(kube, namespace, seed_template(namespace))
    pods, pvcs = await owned(kube, namespace, "alice")
    for res, obj in ((POD, pods[0]), (PVC, pvcs[0])):
        await _patch(
            kube,
            res,
            namespace,
            obj["metadata"]["name"],
            {"metadata": {"annotations": {"admin/note": "x"}, "labels": {"admin/l": "y"}}},
            "kubectl-annotate",
        )
    await _assert_idle(kube, namespace)
    pods, _ = await owned(kube, namespace, "alice")
    assert pods[0]["metadata"]["annotations"]["admin/note"] == "x"


async def test_adopted_pod_gets_metadata_then_waits_quietly(cluster, namespace):
    """kubespawner's running pod adopted (adopt: true): our metadata once, its spec change waits,
    and the passes after write nothing (the cache keeps an adopted pod whole)."""
    kube = cluster.kube
    existing = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "jupyter-alice", "namespace": namespace, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "notebook", "image": "busybox", "command": ["sleep"]}]},
    }
    await kube.apply(existing, field_manager="kubespawner")
    template = seed_template(namespace)
    pod_item = template["spec"]["pods"][0]
    pod_item["resourceName"] = "jupyter-{jupyterhub.user.name}"
    pod_item["adopt"] = True
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice", **{"jupyterhub.user.name": "alice"}))
    first = await once(kube, namespace)
    pod = next(o for o in result_for(first, "alice").outcomes if o.item.section == "pods")
    assert pod.action == "waiting", (pod.action, pod.message, pod.fields)
    live = await kube.get(POD, namespace, "jupyter-alice")
    # README (Ownership): "an adopted pod gets its metadata and its spec change waits"
    assert live["metadata"]["labels"].get(labels.MANAGED_BY) == labels.MANAGED_BY_VALUE, (
        live["metadata"],
        condition(await status_of(kube, namespace, "alice"), "Progressing"),
    )
    assert live["spec"]["containers"][0]["image"] == "busybox"
    before = live["metadata"]["resourceVersion"]
    for _ in range(2):
        summary = await once(kube, namespace)
        pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
        assert pod.action == "waiting", (pod.action, pod.message, pod.fields)
    live = await kube.get(POD, namespace, "jupyter-alice")
    ours = [
        e
        for e in live["metadata"]["managedFields"]
        if e["manager"] == FIELD_MANAGER and not e.get("subresource")
    ]
    assert live["metadata"].get("generation") == 1 and len(ours) == 1, ours
    assert before  # resourceVersion moves with the kubelet's status; our entry is checked instead


async def test_continuous_rewatch_every_second_writes_nothing(cluster, namespace):
    """Watches that the server ends every second (re-watch, re-list after a 410): the copies
    re-read must compare equal to what we applied, so nothing is written."""
    kube = cluster.kube
    template = seed_template(namespace)
    notebook_container(template)["resources"] = {"requests": {"memory": "0.5Gi", "cpu": "0.1"}}
    template["spec"]["pvcs"][0]["spec"]["resources"]["requests"]["storage"] = "1024Mi"
    await put(kube, template)
    async with _Running(kube, namespace, watch_timeout_seconds=1) as running:
        await put(kube, seed_instance(namespace, "alice"))
        await _ready(kube, namespace)
        await running.quiet(2)
        versions = await _versions(kube, namespace)
        assert await running.quiet(5) == {}
        assert await _versions(kube, namespace) == versions


async def test_continuous_template_removals_label_applied_env_waits(cluster, namespace):
    """Created in continuous mode (cached from the rendered manifest, our field set folded): the
    template then drops a pod label and an env entry. The label goes at once (metadata apply
    carrying the folded spec back unchanged: no restart), the env removal waits and is named."""
    kube = cluster.kube
    await put(kube, seed_template(namespace))
    async with _Running(kube, namespace) as running:
        await put(kube, seed_instance(namespace, "alice"))
        await _ready(kube, namespace)
        await running.quiet(2)
        pods, _ = await owned(kube, namespace, "alice")
        spec_before = pods[0]["spec"]
        assert "jupyternetes.kadense.io/userId" in pods[0]["metadata"]["labels"]
        live_template = await _template(kube, namespace)
        live_template["spec"]["pods"][0]["labels"] = {"team": "x"}
        container = notebook_container(live_template)
        container["env"] = [e for e in container["env"] if e["name"] != "JUPYTERHUB_ADMIN_ACCESS"]
        await put(kube, live_template)

        async def relabelled():
            pods, _ = await owned(kube, namespace, "alice")
            lbl = pods[0]["metadata"]["labels"]
            return pods[0] if "jupyternetes.kadense.io/userId" not in lbl else None

        pod = await wait_for(relabelled, timeout=60, interval=0.3, message="label dropped")
        assert pod["metadata"]["labels"]["team"] == "x"
        assert pod["spec"]["containers"] == spec_before["containers"]
        status = await status_of(kube, namespace, "alice")
        progressing = condition(status, "Progressing")
        assert progressing.get("reason") == "UpdatePendingRestart", progressing
        assert "spec.containers[0].env" in progressing["message"], progressing
        await running.quiet(2)
        assert await running.quiet(3) == {}


async def _limit_range(kube, namespace: str) -> None:
    """Admission that adds resources to every container created in the namespace."""
    await put(
        kube,
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "defaults", "namespace": namespace},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "500m", "memory": "256Mi"},
                        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                    }
                ]
            },
        },
    )


async def test_limit_range_defaults_are_not_our_change_on_restart(cluster, namespace):
    """A LimitRange fills in resources at create (admission, inside our apply). A later template
    change of a pod label only must apply the label and report no spec change waiting."""
    kube = cluster.kube
    await _limit_range(kube, namespace)
    await _start(kube, namespace, seed_template(namespace))
    await _assert_idle(kube, namespace)
    live_template = await _template(kube, namespace)
    live_template["spec"]["pods"][0]["labels"]["team"] = "x"
    await put(kube, live_template)
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    assert pod.action == "configured" and not pod.fields, (pod.action, pod.message, pod.fields)
    pods, _ = await owned(kube, namespace, "alice")
    assert pods[0]["metadata"]["labels"]["team"] == "x"
    await _assert_idle(kube, namespace)


async def test_limit_range_defaults_are_not_our_change_in_place(cluster, namespace):
    """Same under InPlace: a label-only template change is applied, not reported pending."""
    kube = cluster.kube
    await _limit_range(kube, namespace)
    template = seed_template(namespace)
    template["spec"]["pods"][0]["updateStrategy"] = "InPlace"
    await _start(kube, namespace, template)
    live_template = await _template(kube, namespace)
    live_template["spec"]["pods"][0]["labels"]["team"] = "x"
    await put(kube, live_template)
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    assert pod.action == "configured", (pod.action, pod.message, pod.fields)
    pods, _ = await owned(kube, namespace, "alice")
    assert pods[0]["metadata"]["labels"]["team"] == "x"
    await _assert_idle(kube, namespace)


async def test_merge_key_zoo_cached_whole_and_idle(cluster, namespace):
    """Lists with two-key merge keys (topologySpreadConstraints: topologyKey+whenUnsatisfiable),
    set lists and atomic lists: what we applied is read back element for element."""
    kube = cluster.kube
    template = seed_template(namespace)
    spec = template["spec"]["pods"][0]["spec"]
    spec["topologySpreadConstraints"] = [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
    ]
    spec["hostAliases"] = [
        {"ip": "127.0.0.1", "hostnames": ["a", "b"]},
        {"ip": "127.0.0.2", "hostnames": ["c"]},
    ]
    spec["readinessGates"] = [{"conditionType": "example.com/ready"}]
    spec["tolerations"] = [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
    container = notebook_container(template)
    container["securityContext"] = {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    container["volumeMounts"].append({"name": "workspace-pvc", "mountPath": "/b", "subPath": "b"})
    await _start(kube, namespace, template)
    pods, _ = await owned(kube, namespace, "alice")
    ours = applied_by(cached(copy.deepcopy(pods[0])), FIELD_MANAGER)["spec"]
    assert ours["topologySpreadConstraints"] == spec["topologySpreadConstraints"]
    assert ours["hostAliases"] == spec["hostAliases"]
    assert ours["readinessGates"] == spec["readinessGates"]
    # atomic: admission's not-ready/unreachable tolerations join ours (README, updateStrategy)
    assert ours["tolerations"][:1] == spec["tolerations"]
    assert ours["containers"][0]["securityContext"] == container["securityContext"]
    assert len(ours["containers"][0]["volumeMounts"]) == 2
    await _assert_idle(kube, namespace)


async def test_in_place_new_toleration_is_applied(cluster, namespace):
    """README: InPlace applies "a new toleration". The template sets tolerations (a list the pod
    owns whole, to which admission appended not-ready/unreachable); adding one must be applied
    (or at least the pending report must not name phantom changes), then idle."""
    kube = cluster.kube
    template = seed_template(namespace)
    pod_item = template["spec"]["pods"][0]
    pod_item["updateStrategy"] = "InPlace"
    pod_item["spec"]["tolerations"] = [{"key": "a", "operator": "Exists", "effect": "NoSchedule"}]
    await _start(kube, namespace, template)
    await _assert_idle(kube, namespace)
    live_template = await _template(kube, namespace)
    live_template["spec"]["pods"][0]["spec"]["tolerations"].append(
        {"key": "b", "operator": "Exists", "effect": "NoSchedule"}
    )
    await put(kube, live_template)
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    assert pod.action == "configured", (pod.action, pod.message, pod.fields)
    pods, _ = await owned(kube, namespace, "alice")
    assert {"key": "b", "operator": "Exists", "effect": "NoSchedule"} in pods[0]["spec"][
        "tolerations"
    ]
    await _assert_idle(kube, namespace)


async def test_removed_pod_item_pruned_and_noted_on_its_instance(cluster, namespace):
    """A pod item dropped from the template is pruned and a `Pruned` Event names it on the
    instance (pruned_notes now looks only at the pruned objects' namespaces)."""
    kube = cluster.kube
    template = seed_template(namespace)
    side = copy.deepcopy(template["spec"]["pods"][0])
    side["name"] = "side"
    side["spec"]["containers"][0]["ports"] = []
    template["spec"]["pods"].append(side)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "alice"))
    summary = await once(kube, namespace)
    assert actions(summary, "alice")["created"] == 3, result_for(summary, "alice").outcomes
    live_template = await _template(kube, namespace)
    live_template["spec"]["pods"] = live_template["spec"]["pods"][:1]
    await put(kube, live_template)
    summary = await once(kube, namespace)
    assert [c.ref.name for c in summary.pruned] == ["alice-side"], summary.pruned

    async def noted():
        listed = await kube.call("GET", f"/api/v1/namespaces/{namespace}/events")
        return [
            e
            for e in listed["items"]
            if e.get("reason") == "Pruned" and e["involvedObject"].get("name") == "alice"
        ]

    found = await wait_for(noted, timeout=30, message="Pruned event")
    assert "alice-side" in found[0]["message"], found
    writers = {m["manager"] for m in found[0]["metadata"]["managedFields"]}
    assert writers == {FIELD_MANAGER}, writers  # our field manager, not our User-Agent


async def test_admin_strips_managed_by_label_then_pass_settles(cluster, namespace):
    """`kubectl label pod ... app.kubernetes.io/managed-by-`: the pod leaves our label-selected
    lists. The next passes must take it back (label restored) or report it, never delete or
    re-create the running server, and then go quiet."""
    kube = cluster.kube
    await _start(kube, namespace, seed_template(namespace))
    pods, _ = await owned(kube, namespace, "alice")
    name, uid = pods[0]["metadata"]["name"], pods[0]["metadata"]["uid"]
    await _patch(
        kube, POD, namespace, name, {"metadata": {"labels": {labels.MANAGED_BY: None}}}, "kubectl"
    )
    seen = []
    for _ in range(3):
        summary = await once(kube, namespace)
        pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
        seen.append((pod.action, pod.message[:160]))
    live = await kube.get(POD, namespace, name)
    assert live["metadata"]["uid"] == uid, seen  # the running server was not replaced
    assert live["metadata"]["labels"].get(labels.MANAGED_BY) == labels.MANAGED_BY_VALUE, seen
    assert seen[-1][0] == "unchanged", seen


async def test_recreate_with_zero_probe_delay_never_kills_the_server(cluster, namespace):
    """updateStrategy Recreate and a template spelling `initialDelaySeconds: 0` (or hostPort 0,
    or a divisor 1000m): the apiserver drops/rewrites it, so the pod never "matches". Under
    Recreate the pass after the create must not delete the user's running server for a change
    that is not one (each new pod would be deleted again: a restart loop)."""
    kube = cluster.kube
    template = seed_template(namespace)
    template["spec"]["pods"][0]["updateStrategy"] = "Recreate"
    notebook_container(template)["readinessProbe"] = {
        "tcpSocket": {"port": 8888},
        "initialDelaySeconds": 0,
    }
    await _start(kube, namespace, template)
    pods, _ = await owned(kube, namespace, "alice")
    uid = pods[0]["metadata"]["uid"]
    summary = await once(kube, namespace)
    pod = next(o for o in result_for(summary, "alice").outcomes if o.item.section == "pods")
    live = await kube.get(POD, namespace, pods[0]["metadata"]["name"])
    assert live is not None and live["metadata"]["uid"] == uid, (pod.action, pod.fields)
    assert not live["metadata"].get("deletionTimestamp"), (pod.action, pod.fields)
    assert pod.action == "unchanged", (pod.action, pod.message, pod.fields)


async def test_continuous_recreate_with_divisor_spelling_no_restart_loop(cluster, namespace):
    """The same in continuous mode with an env divisor written `1000m` (stored `1`): once Ready,
    resyncs must neither delete nor re-create the server."""
    kube = cluster.kube
    template = seed_template(namespace)
    template["spec"]["pods"][0]["updateStrategy"] = "Recreate"
    container = notebook_container(template)
    container["resources"] = {"limits": {"cpu": "1"}}
    container["env"].append(
        {
            "name": "CPU_LIMIT",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1000m"}},
        }
    )
    await put(kube, template)
    async with _Running(kube, namespace) as running:
        await put(kube, seed_instance(namespace, "alice"))
        await _ready(kube, namespace)

        async def pod_uid():
            pods, _ = await owned(kube, namespace, "alice")
            return pods[0]["metadata"]["uid"] if pods else None

        uid = await wait_for(pod_uid, timeout=60, message="a pod")
        writes = await running.quiet(4)
        uids = [uid, await wait_for(pod_uid, timeout=60, message="a pod")]
        assert "recreating" not in writes and "created" not in writes, (writes, uids)
        assert uids[0] == uids[1], (writes, uids)


async def test_continuous_a_refused_change_is_not_asked_again_every_resync(cluster, namespace):
    """A template change Kubernetes refuses in place (a claim's accessModes): reported pending,
    and the refused apply is sent once, not on every resync (apply.py remembers the refusal
    for that version of the claim and that manifest). Requests are counted by a spy on the
    reconciler's client (it only counts; every request still goes to the apiserver)."""
    kube = cluster.kube
    template = seed_template(namespace)
    await put(kube, template)
    sent: list[str] = []
    async with _Running(kube, namespace) as running:
        real = running.controller.kube.apply

        async def counted(obj, **kw):
            if obj.get("kind") == "PersistentVolumeClaim" and not kw.get("subresource"):
                sent.append(obj["metadata"]["name"])
            return await real(obj, **kw)

        running.controller.kube.apply = counted
        await put(kube, seed_instance(namespace, "alice"))
        await _ready(kube, namespace)
        template["spec"]["pvcs"][0]["spec"]["accessModes"] = ["ReadWriteMany"]
        await put(kube, template)

        async def reported():
            status = await status_of(kube, namespace, "alice")
            return condition(status, "Progressing").get("reason") == "UpdatePending"

        await wait_for(reported, timeout=60, interval=0.5, message="the refusal reported")
        before = len(sent)
        await running.quiet(4)
        assert len(sent) == before, sent  # nothing asked again
        assert await reported()  # and still told
