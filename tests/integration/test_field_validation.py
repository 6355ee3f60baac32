"""Which field validation the apiserver is asked for (apply.validation): "Ignore" only where our
own schema check already judged every field name, on a server of our schemas' minor; "Strict"
everywhere else, so that an unknown field is refused, never silently dropped."""

from __future__ import annotations

import pytest
from reconcile_helpers import apply_validations, once, put, result_for, seed_instance, seed_template

from jupyternetes_ssa.kube import POD, ApiError
from jupyternetes_ssa.schema import MINOR


async def test_pods_and_pvcs_checked_offline_skip_the_servers_repeat(cluster, namespace):
    """The seed template on a server of our minor: its pod and PVC were judged field by field
    before any request, so the apiserver does not repeat it; our own status (a custom
    resource, whose CRD may be older than us) stays strict."""
    kube = cluster.kube
    assert await kube.server_minor() == MINOR  # the local cluster is of our schemas' minor
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "alice"))

    result = result_for(await once(kube, namespace), "alice")

    assert not result.error, result.error
    seen = apply_validations(cluster, namespace)
    assert seen["pods"] == {"Ignore"} and seen["persistentvolumeclaims"] == {"Ignore"}, seen
    assert seen["jupyternotebookinstances/status"] == {"Strict"}, seen


async def test_a_field_named_by_a_variable_is_judged_by_the_server(cluster, namespace):
    """A placeholder in a field name escapes the offline check (it is only known per
    instance): that template's objects are applied strictly, and an instance whose variable
    names no field is refused by the apiserver with the field named, not run without it."""
    kube = cluster.kube
    template = seed_template(namespace)
    template["spec"]["pods"][0]["spec"]["{extra.field}"] = "x"
    await put(kube, template)
    await put(kube, seed_instance(namespace, "bob", **{"extra.field": "notAPodField"}))

    result = result_for(await once(kube, namespace), "bob")

    assert "notAPodField" in (result.error or ""), result.error
    assert await kube.get(POD, namespace, "bob-notebook") is None
    assert apply_validations(cluster, namespace)["pods"] == {"Strict"}


async def test_a_server_of_another_minor_checks_every_field(cluster, namespace):
    """On a server whose minor is not our schemas' (simulated: the cached answer to /version
    is replaced, as the local cluster runs one version only), every apply is strict."""
    kube = cluster.kube.retrying(cluster.kube.retry)
    kube._minor = ["0.0"]  # fault injection: a server our schemas do not describe
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "carol"))

    result = result_for(await once(kube, namespace), "carol")

    assert not result.error, result.error
    seen = apply_validations(cluster, namespace)
    assert seen["pods"] == {"Strict"} and seen["persistentvolumeclaims"] == {"Strict"}, seen


async def test_behind_our_check_the_apiserver_refuses_an_unknown_field_even_with_ignore(
    cluster, namespace
):
    """The last line of defence, should our check ever miss a field name: a server-side apply
    is converted to the kind's typed schema, which refuses a field it lacks whatever
    fieldValidation asked for (measured on the local cluster's version, 1.36)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "x"}], "hostnamee": "h"},
    }
    with pytest.raises(ApiError) as refused:
        await cluster.kube.apply(pod, validation="Ignore")
    assert "hostnamee" in refused.value.message
    assert await cluster.kube.get(POD, namespace, "probe") is None
