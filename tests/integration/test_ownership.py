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


@pytest.fixture
async def kube(cluster) -> Kube:
    return Kube(cluster.api)


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
