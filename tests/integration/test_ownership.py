"""Ownership against a real apiserver: the reconciler touches only what it created, for the
instance that created it; adoption only on request; garbage collection only of what is provably
ours and unwanted; drift by other managers repaired."""

from __future__ import annotations

import copy

import pytest
from reconcile_helpers import (
    condition,
    once,
    put,
    result_for,
    seed_instance,
    seed_template,
    status_of,
)

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube, Resource
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.ownership import ADOPTED, OWNER
from jupyternetes_ssa.reconcile import reconcile_once
from jupyternetes_ssa.settings import Settings

pytestmark = pytest.mark.integration

SERVICE = Resource("v1", "Service", "services")
ROLE = Resource("rbac.authorization.k8s.io/v1", "Role", "roles")
NETPOL = Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")


def hand_made_pvc(namespace: str, name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": {"made-by": "hand"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def pvc_named(template: dict, pattern: str, **item) -> dict:
    template["spec"]["pvcs"][0].update(resourceName=pattern, **item)
    return template


async def test_a_hand_made_pvc_with_our_name_is_never_taken_over_nor_deleted(
    kube: Kube, namespace: str
):
    handmade = await kube.apply(hand_made_pvc(namespace, "data-jovyan"), field_manager="kubectl")
    template = pvc_named(
        seed_template(namespace), "data-{jupyterhub.user.name}", deletionPolicy="Delete"
    )
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace)

    result = result_for(summary, "jovyan")
    assert result.reason == "NameConflict"
    assert f"PersistentVolumeClaim {namespace}/data-jovyan already exists" in result.error
    assert "someone else" in result.error and "adopt: true" in result.error
    assert {o.action for o in result.outcomes} == {"failed"}  # the pod is held back too
    assert await kube.get(POD, namespace, "jovyan-notebook") is None
    live = await kube.get(PVC, namespace, "data-jovyan")
    # (its resourceVersion moves: the volume controller binds it; that is not us)
    assert FIELD_MANAGER not in {m["manager"] for m in live["metadata"]["managedFields"]}
    assert labels.MANAGED_BY not in live["metadata"]["labels"]
    assert OWNER not in (live["metadata"].get("annotations") or {})
    status = await status_of(kube, namespace, "jovyan")
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NameConflict")

    await kube.delete(INSTANCE, namespace, "jovyan")
    summary = await once(kube, namespace)
    assert not summary.pruned
    live = await kube.get(PVC, namespace, "data-jovyan")
    assert live["metadata"]["uid"] == handmade["metadata"]["uid"]


async def test_two_instances_rendering_one_pod_name_do_not_fight(kube: Kube, namespace: str):
    template = seed_template(namespace)
    template["spec"]["pods"][0]["resourceName"] = "{team}-shared"
    template["spec"]["pvcs"][0]["resourceName"] = "{jupyternetes.instance.name}-workspace"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "first", team="physics"))
    assert (await once(kube, namespace)).ok
    pod_uid = (await kube.get(POD, namespace, "physics-shared"))["metadata"]["uid"]

    await put(kube, seed_instance(namespace, "second", team="physics"))
    for _ in range(3):
        summary = await once(kube, namespace)
        second = result_for(summary, "second")
        assert second.reason == "NameConflict"
        assert f"JupyterNotebookInstance {namespace}/first" in second.error
        assert result_for(summary, "first").converged
        assert not summary.pruned

    pod = await kube.get(POD, namespace, "physics-shared")
    assert pod["metadata"]["uid"] == pod_uid
    assert pod["metadata"]["annotations"][OWNER].startswith(f"{namespace}/first/")
    assert await kube.get(PVC, namespace, "second-workspace") is None  # nothing half-applied


async def test_instance_and_item_names_that_concatenate_alike_do_not_share_a_pvc(
    kube: Kube, namespace: str
):
    """`a` + item `b-c` and `a-b` + item `c` both name their PVC `a-b-c`."""
    template = seed_template(namespace)
    template["spec"]["pvcs"][0]["name"] = "b-c"
    template["spec"]["pods"][0]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = (
        "{jupyternetes.pvcs.b-c}"
    )
    other = copy.deepcopy(template)
    other["metadata"]["name"] = "other-template"
    other["spec"]["pvcs"][0]["name"] = "c"
    other["spec"]["pods"][0]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = (
        "{jupyternetes.pvcs.c}"
    )
    await put(kube, template)
    await put(kube, other)
    await put(kube, seed_instance(namespace, "a"))
    assert (await once(kube, namespace)).ok
    await put(kube, seed_instance(namespace, "a-b", template="other-template"))

    summary = await once(kube, namespace)

    assert result_for(summary, "a").converged
    assert result_for(summary, "a-b").reason == "NameConflict"
    pvc = await kube.get(PVC, namespace, "a-b-c")
    assert pvc["metadata"]["annotations"][OWNER].startswith(f"{namespace}/a/")


async def test_adopt_takes_over_a_kubespawner_claim_and_never_deletes_it(
    kube: Kube, namespace: str
):
    claim = await kube.apply(hand_made_pvc(namespace, "claim-jovyan"), field_manager="kubectl")
    template = pvc_named(
        seed_template(namespace),
        "claim-{jupyterhub.user.name}",
        adopt=True,
        deletionPolicy="Delete",
    )
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))

    summary = await once(kube, namespace)

    assert result_for(summary, "jovyan").converged, result_for(summary, "jovyan").error
    pvc = await kube.get(PVC, namespace, "claim-jovyan")
    assert pvc["metadata"]["uid"] == claim["metadata"]["uid"]
    assert pvc["metadata"]["annotations"][ADOPTED] == "true"
    assert pvc["metadata"]["labels"]["made-by"] == "hand"  # what others set is kept
    status = await status_of(kube, namespace, "jovyan")
    assert status["pvcs"]["workspace"]["parameters"]["adopted"] == "true"
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "claim-jovyan"

    # Neither garbage collection (policy Delete, instance gone) nor a purge deletes it.
    purging = seed_instance(namespace, "jovyan")
    purging["spec"]["purge"] = True
    await put(kube, purging)
    await once(kube, namespace)
    await wait_for(
        lambda: _gone(kube, POD, namespace, "jovyan-notebook"), timeout=60, message="pod purged"
    )
    await once(kube, namespace)
    assert (await status_of(kube, namespace, "jovyan"))["phase"] == "Purged"
    await kube.delete(INSTANCE, namespace, "jovyan")
    summary = await once(kube, namespace)
    assert [str(c.ref) for c in summary.kept] == [f"PersistentVolumeClaim {namespace}/claim-jovyan"]
    assert (await kube.get(PVC, namespace, "claim-jovyan"))["metadata"]["uid"] == pvc["metadata"][
        "uid"
    ]


async def test_adopt_never_takes_an_object_from_another_instance(kube: Kube, namespace: str):
    template = pvc_named(seed_template(namespace), "{team}-data", adopt=True)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "first", team="x"))
    assert (await once(kube, namespace)).ok
    await put(kube, seed_instance(namespace, "second", team="x"))

    summary = await once(kube, namespace)

    assert result_for(summary, "second").reason == "NameConflict"
    pvc = await kube.get(PVC, namespace, "x-data")
    assert pvc["metadata"]["annotations"][OWNER].startswith(f"{namespace}/first/")


async def test_a_restarted_instance_finds_its_pvc_again(kube: Kube, namespace: str):
    """A new incarnation (same name, new uid) takes over its predecessor's retained PVC."""
    await put(kube, seed_template(namespace))
    first = await put(kube, seed_instance(namespace, "jovyan"))
    assert (await once(kube, namespace)).ok
    pvc_uid = (await kube.get(PVC, namespace, "jovyan-workspace"))["metadata"]["uid"]
    await kube.delete(INSTANCE, namespace, "jovyan")
    await once(kube, namespace)

    second = await put(kube, seed_instance(namespace, "jovyan"))
    await wait_for(
        lambda: _gone(kube, POD, namespace, "jovyan-notebook"), timeout=60, message="old pod gone"
    )
    summary = await once(kube, namespace)

    assert summary.ok, result_for(summary, "jovyan").error
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    pvc = await kube.get(PVC, namespace, "jovyan-workspace")
    assert pvc["metadata"]["uid"] == pvc_uid
    assert (
        pvc["metadata"]["annotations"][OWNER] == f"{namespace}/jovyan/{second['metadata']['uid']}"
    )


class CreatesDuringTheInstanceList(Kube):
    """Fault injection (the interleaving cannot be produced on demand otherwise): right after
    the pass lists instances, a brand-new instance is created and converged by another
    reconciler, so its objects exist before the pass would list objects if it listed them last."""

    def __init__(self, api, on_instances):
        super().__init__(api)
        self.on_instances = on_instances

    async def list(self, res, namespace=None, **kw):
        listed = await super().list(res, namespace, **kw)
        if res == INSTANCE and self.on_instances is not None:
            hook, self.on_instances = self.on_instances, None
            await hook()
        return listed


async def test_a_pass_racing_a_new_instance_never_prunes_its_objects(
    cluster, kube: Kube, namespace: str
):
    template = seed_template(namespace)
    template["spec"]["pvcs"][0]["deletionPolicy"] = "Delete"
    template["spec"]["pods"][0]["ownedByInstance"] = False
    await put(kube, template)

    async def newcomer() -> None:
        await put(kube, seed_instance(namespace, "newcomer"))
        assert (await once(kube, namespace)).ok

    racing = CreatesDuringTheInstanceList(cluster.api, newcomer)
    summary = await reconcile_once(racing, Settings(namespaces=(namespace,)))

    assert racing.on_instances is None  # the race really happened
    assert not summary.pruned
    assert await kube.get(POD, namespace, "newcomer-notebook") is not None
    assert await kube.get(PVC, namespace, "newcomer-workspace") is not None
    assert not (await once(kube, namespace)).pruned


def other_resources(namespace: str) -> list[dict]:
    return [
        {
            "name": "svc",
            "apiVersion": "v1",
            "kind": "Service",
            "spec": {"selector": {"app": "{jupyternetes.instance.name}"}, "ports": [{"port": 80}]},
        },
        {
            "name": "role",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "name": "netpol",
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "spec": {
                "podSelector": {"matchLabels": {"app": "x"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"hub": "true"}}}]}],
            },
        },
    ]


async def edit(kube: Kube, res: Resource, ns: str, name: str, change) -> None:
    """What `kubectl edit` does: a PUT of the whole object by another field manager."""
    obj = await kube.get(res, ns, name)
    change(obj)
    await kube.request(
        "PUT",
        res,
        ns,
        res.url(name),
        content=__import__("json").dumps(obj),
        params={"fieldManager": "kubectl-edit"},
    )


async def test_fields_we_set_that_another_manager_extended_are_repaired(kube: Kube, namespace: str):
    template = seed_template(namespace)
    template["spec"]["otherResources"] = other_resources(namespace)
    await put(kube, template)
    await put(kube, seed_instance(namespace, "jovyan"))
    settings = {"allow_kinds": ("Service", "Role.rbac.authorization.k8s.io", "NetworkPolicy")}
    assert (await once(kube, namespace, **settings)).ok

    rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    peer = {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}
    await edit(
        kube, SERVICE, namespace, "jovyan-svc", lambda o: o["spec"]["selector"].update(x="y")
    )
    await edit(kube, ROLE, namespace, "jovyan-role", lambda o: o["rules"].append(rule))
    await edit(
        kube, NETPOL, namespace, "jovyan-netpol", lambda o: o["spec"]["ingress"].append(peer)
    )

    summary = await once(kube, namespace, **settings)

    changed = {
        o.item.item for o in result_for(summary, "jovyan").outcomes if o.action == "configured"
    }
    assert changed == {"svc", "role", "netpol"}
    assert (await kube.get(SERVICE, namespace, "jovyan-svc"))["spec"]["selector"] == {
        "app": "jovyan"
    }
    assert len((await kube.get(ROLE, namespace, "jovyan-role"))["rules"]) == 1
    assert len((await kube.get(NETPOL, namespace, "jovyan-netpol"))["spec"]["ingress"]) == 1

    again = await once(kube, namespace, **settings)
    assert {o.action for o in result_for(again, "jovyan").outcomes} == {"unchanged"}


async def _gone(kube: Kube, res: Resource, ns: str, name: str) -> bool:
    return await kube.get(res, ns, name) is None


# --- found by a hostile review ------------------------------------------------------------------


async def test_an_adopted_object_gets_no_owner_reference_so_kubernetes_never_collects_it(
    kube: Kube, namespace: str
):
    await kube.apply(hand_made_pvc(namespace, "claim-carol"), field_manager="kubectl")
    template = pvc_named(
        seed_template(namespace), "claim-{jupyterhub.user.name}", adopt=True, ownedByInstance=True
    )
    await put(kube, template)
    await put(kube, seed_instance(namespace, "carol", **{"jupyterhub.user.name": "carol"}))
    assert (await once(kube, namespace)).ok
    pvc = await kube.get(PVC, namespace, "claim-carol")
    assert "ownerReferences" not in pvc["metadata"]

    await kube.delete(INSTANCE, namespace, "carol", propagation="Foreground")
    await wait_for(
        lambda: _gone(kube, POD, namespace, "carol-notebook"), timeout=60, message="pod collected"
    )
    await wait_for(
        lambda: _gone(kube, INSTANCE, namespace, "carol"), timeout=60, message="instance gone"
    )
    await once(kube, namespace)
    assert (await kube.get(PVC, namespace, "claim-carol"))["metadata"]["uid"] == pvc["metadata"][
        "uid"
    ]


async def test_two_instances_adopting_one_object_in_one_pass_cannot_both_win(
    kube: Kube, namespace: str
):
    """A user's default and named servers both render kubespawner's claim-<user>."""
    template = pvc_named(seed_template(namespace), "claim-{jupyterhub.user.name}", adopt=True)
    await put(kube, template)
    for k in range(4):
        user = f"q{k}"
        await kube.apply(hand_made_pvc(namespace, f"claim-{user}"), field_manager="kubectl")
        for suffix in ("a", "b"):
            await put(
                kube, seed_instance(namespace, f"{user}{suffix}", **{"jupyterhub.user.name": user})
            )

    summary = await once(kube, namespace)

    for k in range(4):
        results = [result_for(summary, f"q{k}{s}") for s in ("a", "b")]
        assert sorted(r.converged for r in results) == [False, True], [r.error for r in results]
        loser = next(r for r in results if not r.converged)
        assert loser.reason in ("NameConflict", "ApplyFailed"), loser.error
        assert await kube.get(POD, namespace, f"{loser.instance.name}-notebook") is None


async def test_a_tampered_owner_record_never_gets_an_object_pruned(kube: Kube, namespace: str):
    template = pvc_named(seed_template(namespace), "claim-{jupyterhub.user.name}")
    template["spec"]["pvcs"][0]["deletionPolicy"] = "Delete"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "ia", **{"jupyterhub.user.name": "alice"}))
    ib = await put(kube, seed_instance(namespace, "ib", **{"jupyterhub.user.name": "bob"}))
    assert (await once(kube, namespace)).ok
    ia = await kube.get(INSTANCE, namespace, "ia")
    pvc = await kube.get(PVC, namespace, "claim-bob")
    # Someone points claim-bob's record at ia (alive), and at an instance in another namespace.
    for record in (f"{namespace}/ia/{ia['metadata']['uid']}", f"other/ib/{ib['metadata']['uid']}"):
        pvc["metadata"]["annotations"][OWNER] = record
        await kube.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": "claim-bob",
                    "namespace": namespace,
                    "annotations": {OWNER: record},
                },
            },
            field_manager="intruder",
            force=True,
        )
        summary = await once(kube, namespace)
        assert not summary.pruned, summary.pruned
        live = await kube.get(PVC, namespace, "claim-bob")
        assert live["metadata"]["uid"] == pvc["metadata"]["uid"]
        assert not live["metadata"].get("deletionTimestamp")


async def test_an_instance_held_back_by_a_conflict_keeps_the_object_it_has(
    kube: Kube, namespace: str
):
    """The admin renames a PVC item's pattern onto a name someone else holds: the user's
    current PVC (policy Delete) is not pruned while the new one cannot be made."""
    template = pvc_named(seed_template(namespace), "{jupyterhub.user.name}-home")
    template["spec"]["pvcs"][0]["deletionPolicy"] = "Delete"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "j", **{"jupyterhub.user.name": "jo"}))
    assert (await once(kube, namespace)).ok
    await kube.apply(hand_made_pvc(namespace, "claim-jo"), field_manager="kubectl")
    await put(kube, pvc_named(template, "claim-{jupyterhub.user.name}"))

    summary = await once(kube, namespace)

    assert result_for(summary, "j").reason == "NameConflict"
    assert not summary.pruned
    assert await kube.get(PVC, namespace, "jo-home") is not None


async def test_an_adopted_pod_is_never_deleted_to_apply_a_change(kube: Kube, namespace: str):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "legacy-gina", "namespace": namespace},
        "spec": {"containers": [{"name": "notebook", "image": "busybox:1.36"}]},
    }
    made = await kube.apply(pod, field_manager="kubectl")
    template = seed_template(namespace)
    item = template["spec"]["pods"][0]
    item.update(resourceName="legacy-{jupyterhub.user.name}", adopt=True, updateStrategy="Recreate")
    await put(kube, template)
    await put(kube, seed_instance(namespace, "g", **{"jupyterhub.user.name": "gina"}))

    summary = await once(kube, namespace, recreate_pods=True)

    outcome = next(o for o in result_for(summary, "g").outcomes if o.item.section == "pods")
    assert outcome.action == "waiting", outcome  # its spec waits; its metadata says it is ours
    live = await kube.get(POD, namespace, "legacy-gina")
    assert live["metadata"]["uid"] == made["metadata"]["uid"]
    assert not live["metadata"].get("deletionTimestamp")
    assert live["metadata"]["annotations"][ADOPTED] == "true"
    assert live["metadata"]["annotations"][OWNER].startswith(f"{namespace}/g/")
