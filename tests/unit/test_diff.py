"""diff.py: resource quantities, `drift` (leaves we set vs live) and `changes` (whole objects)."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from jupyternetes_ssa.diff import changes, drift, quantity

# --- quantity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("0", Decimal(0)),
        ("+3", Decimal(3)),
        ("-2", Decimal(-2)),
        ("0.5", Decimal("0.5")),
        ("500m", Decimal("0.5")),
        ("100n", Decimal("1e-7")),
        ("250u", Decimal("0.00025")),
        ("1k", Decimal(1000)),
        ("2M", Decimal(2 * 10**6)),
        ("3G", Decimal(3 * 10**9)),
        ("1T", Decimal(10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),  # exa, not an exponent without digits
        ("2Ki", Decimal(2048)),
        ("1Mi", Decimal(2**20)),
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1Ti", Decimal(2**40)),
        ("1Pi", Decimal(2**50)),
        ("1Ei", Decimal(2**60)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("5e-1", Decimal("0.5")),
        (7, Decimal(7)),
        (0.25, Decimal("0.25")),
    ],
)
def test_quantity_values(text: object, value: Decimal) -> None:
    assert quantity(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "abc", "Gi", "1K", "1Gb", "1gi", " 1Gi", "1Gi ", "1.2.3", ".", "1e", "0x10", "NaN"],
)
def test_quantity_rejects_what_is_not_a_quantity(text: str) -> None:
    assert quantity(text) is None


@pytest.mark.parametrize("value", [None, True, False, [1], {"a": 1}, (1,)])
def test_quantity_rejects_non_scalar_and_bool(value: object) -> None:
    assert quantity(value) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [("1Gi", "1024Mi"), ("0.5", "500m"), ("1", "1000m"), ("1k", "1000"), ("1Mi", "1024Ki")],
)
def test_quantity_equal_values_in_different_units(a: str, b: str) -> None:
    assert quantity(a) == quantity(b)


@pytest.mark.parametrize(("a", "b"), [("1G", "1Gi"), ("1m", "1M"), ("1k", "1Ki")])
def test_quantity_decimal_and_binary_suffixes_differ(a: str, b: str) -> None:
    assert quantity(a) != quantity(b)


# --- drift -------------------------------------------------------------------------------------


def pod(**container: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "labels": {"app.kubernetes.io/managed-by": "jupyternetes-ssa", "tier": "user"},
        },
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": "img:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "volumeMounts": [{"name": "home", "mountPath": "/home"}],
                    **container,
                }
            ],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "c"}}],
        },
    }


def with_server_defaults(obj: dict) -> dict:
    live = copy.deepcopy(obj)
    live["metadata"].update(uid="u", resourceVersion="7", managedFields=[{"manager": "x"}])
    spec = live["spec"]
    spec.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default")
    c = spec["containers"][0]
    c.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    # admission appends the service account token volume and its mount
    spec["volumes"].append({"name": "kube-api-access-x", "projected": {"sources": []}})
    c["volumeMounts"].append({"name": "kube-api-access-x", "mountPath": "/var/run/secrets"})
    live["status"] = {"phase": "Running"}
    return live


def test_drift_none_when_live_equals_desired() -> None:
    assert drift(pod(), pod()) == []


def test_drift_ignores_server_defaults_and_appended_list_items() -> None:
    assert drift(pod(), with_server_defaults(pod())) == []


def test_drift_reports_a_changed_leaf_with_its_path() -> None:
    live = pod()
    live["spec"]["containers"][0]["image"] = "img:2"
    assert drift(pod(), live) == ["spec.containers[0].image"]


def test_drift_reports_a_missing_leaf() -> None:
    live = pod()
    del live["spec"]["containers"][0]["env"][1]["value"]
    assert drift(pod(), live) == ["spec.containers[0].env[1].value"]


def test_drift_reports_each_changed_leaf() -> None:
    live = pod()
    live["spec"]["containers"][0]["image"] = "img:2"
    live["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "other"
    assert sorted(drift(pod(), live)) == [
        "spec.containers[0].image",
        "spec.volumes[0].persistentVolumeClaim.claimName",
    ]


def test_drift_compares_lists_by_index() -> None:
    live = pod()
    env = live["spec"]["containers"][0]["env"]
    env.reverse()
    assert drift(pod(), live) == [
        "spec.containers[0].env[0].name",
        "spec.containers[0].env[0].value",
        "spec.containers[0].env[1].name",
        "spec.containers[0].env[1].value",
    ]


def test_drift_reports_a_list_shorter_than_desired_as_the_list() -> None:
    live = pod()
    live["spec"]["containers"][0]["env"].pop()
    assert drift(pod(), live) == ["spec.containers[0].env"]


def test_drift_ignores_items_appended_to_a_live_list() -> None:
    desired = {"spec": {"tolerations": [{"key": "a"}]}}
    live = {"spec": {"tolerations": [{"key": "a"}, {"key": "node.kubernetes.io/not-ready"}]}}
    assert drift(desired, live) == []


def test_drift_a_list_replaced_by_a_scalar() -> None:
    assert drift({"spec": {"args": ["a"]}}, {"spec": {"args": "a"}}) == ["spec.args"]


def test_drift_a_map_replaced_by_a_scalar_or_missing() -> None:
    assert drift({"spec": {"securityContext": {"runAsUser": 1}}}, {"spec": {}}) == [
        "spec.securityContext"
    ]
    assert drift(
        {"spec": {"securityContext": {"runAsUser": 1}}}, {"spec": {"securityContext": 3}}
    ) == ["spec.securityContext"]


def test_drift_of_a_whole_object_against_nothing() -> None:
    assert drift({"a": 1}, None) == ["."]
    assert drift({"a": 1}, "x") == ["."]


def test_drift_ignores_keys_only_live_has() -> None:
    live = pod()
    live["metadata"]["labels"]["added-by-someone"] = "x"
    live["metadata"]["annotations"] = {"k": "v"}
    assert drift(pod(), live) == []


def test_drift_quotes_keys_that_are_not_plain() -> None:
    live = pod()
    live["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
    assert drift(pod(), live) == ['metadata.labels["app.kubernetes.io/managed-by"]']


def test_drift_plain_keys_may_hold_dashes_and_underscores() -> None:
    assert drift({"a-b": {"c_d": 1}}, {"a-b": {"c_d": 2}}) == ["a-b.c_d"]


def test_drift_a_leaf_we_set_to_null_matches_an_absent_one() -> None:
    assert drift({"spec": {"x": None}}, {"spec": {}}) == []
    assert drift({"spec": {"x": None}}, {"spec": {"x": "set"}}) == ["spec.x"]


def test_drift_types_matter_outside_resources() -> None:
    assert drift({"spec": {"port": "8888"}}, {"spec": {"port": 8888}}) == ["spec.port"]


@pytest.mark.parametrize(
    ("want", "have"),
    [("0.5", "500m"), ("1", "1000m"), ("1Gi", "1024Mi"), ("2", 2), ("1e3", "1k")],
)
def test_drift_compares_container_resources_by_value(want: str, have: object) -> None:
    desired = pod(resources={"limits": {"cpu": want}, "requests": {"memory": want}})
    live = pod(resources={"limits": {"cpu": have}, "requests": {"memory": have}})
    assert drift(desired, live) == []


def test_drift_compares_extended_resources_by_value() -> None:
    desired = pod(resources={"limits": {"nvidia.com/gpu": "1"}})
    live = pod(resources={"limits": {"nvidia.com/gpu": 1}})
    assert drift(desired, live) == []


def test_drift_reports_a_different_resource_value() -> None:
    desired = pod(resources={"limits": {"cpu": "1", "memory": "1Gi"}})
    live = pod(resources={"limits": {"cpu": "999m", "memory": "1G"}})
    assert sorted(drift(desired, live)) == [
        "spec.containers[0].resources.limits.cpu",
        "spec.containers[0].resources.limits.memory",
    ]


def test_drift_reports_a_resource_that_is_not_a_quantity() -> None:
    desired = pod(resources={"limits": {"cpu": "lots"}})
    live = pod(resources={"limits": {"cpu": "many"}})
    assert drift(desired, live) == ["spec.containers[0].resources.limits.cpu"]


def test_drift_compares_pvc_storage_by_value() -> None:
    desired = {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}
    assert drift(desired, {"spec": {"resources": {"requests": {"storage": "1024Mi"}}}}) == []
    assert drift(desired, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}) == [
        "spec.resources.requests.storage"
    ]


def test_drift_compares_quantities_by_value_only_under_resources() -> None:
    desired = pod(env=[{"name": "MEM", "value": "1Gi"}])
    live = pod(env=[{"name": "MEM", "value": "1024Mi"}])
    assert drift(desired, live) == ["spec.containers[0].env[0].value"]
    annotated = {"metadata": {"annotations": {"size": "0.5"}}}
    assert drift(annotated, {"metadata": {"annotations": {"size": "500m"}}}) == [
        "metadata.annotations.size"
    ]


@pytest.mark.parametrize(
    ("field", "zero"),
    [
        ("imagePullSecrets", []),
        ("nodeSelector", {}),
        ("hostname", ""),
        ("hostNetwork", False),
    ],
)
def test_drift_zero_values_the_apiserver_omits_are_not_drift(field: str, zero: object) -> None:
    desired = {"spec": {"restartPolicy": "Never", field: zero}}
    live = {"spec": {"restartPolicy": "Never", "dnsPolicy": "ClusterFirst"}}
    assert drift(desired, live) == []


def test_drift_zero_values_in_a_container_are_not_drift() -> None:
    desired = pod(args=[], env=[{"name": "EMPTY", "value": ""}])
    live = with_server_defaults(pod(env=[{"name": "EMPTY"}]))
    assert drift(desired, live) == []


def test_drift_compares_an_emptydir_size_limit_by_value() -> None:
    desired = {"spec": {"volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "0.5Gi"}}]}}
    live = {"spec": {"volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "512Mi"}}]}}
    assert drift(desired, live) == []


# --- changes -----------------------------------------------------------------------------------


def test_changes_none_between_equal_objects() -> None:
    assert changes(pod(), pod()) == []


def test_changes_ignores_metadata_noise() -> None:
    before = pod()
    after = copy.deepcopy(before)
    before["metadata"].update(
        uid="a", resourceVersion="1", generation=1, creationTimestamp="t1", managedFields=[{}]
    )
    after["metadata"].update(
        uid="b",
        resourceVersion="2",
        generation=2,
        creationTimestamp="t2",
        managedFields=[{"manager": "x"}],
        deletionTimestamp="t3",
        deletionGracePeriodSeconds=30,
    )
    assert changes(before, after) == []


def test_changes_reports_other_metadata() -> None:
    before, after = pod(), pod()
    after["metadata"]["labels"]["tier"] = "admin"
    after["metadata"]["annotations"] = {"k": "v"}
    assert changes(before, after) == [
        "metadata.annotations",
        "metadata.labels.tier",
    ]


def test_changes_reports_keys_added_and_removed_sorted() -> None:
    before = {"spec": {"b": 1, "a": 1}}
    after = {"spec": {"c": 1, "a": 1}}
    assert changes(before, after) == ["spec.b", "spec.c"]


def test_changes_includes_fields_outside_metadata_but_not_the_status() -> None:
    """An apply never changes the status, and the caches keep only part of a pod's."""
    before = {"spec": {"a": 1}, "status": {"phase": "Pending"}}
    assert changes(before, {"spec": {"a": 2}, "status": {"phase": "Running"}}) == ["spec.a"]


def test_changes_same_length_lists_by_index() -> None:
    before, after = pod(), pod()
    after["spec"]["containers"][0]["env"][1]["value"] = "3"
    assert changes(before, after) == ["spec.containers[0].env[1].value"]


def test_changes_different_length_lists_as_the_list() -> None:
    before, after = pod(), pod()
    after["spec"]["volumes"].append({"name": "extra"})
    assert changes(before, after) == ["spec.volumes"]


def test_changes_compares_resources_by_value() -> None:
    before = pod(resources={"requests": {"cpu": "0.5", "memory": "1Gi"}})
    after = pod(resources={"requests": {"cpu": "500m", "memory": "2Gi"}})
    assert changes(before, after) == ["spec.containers[0].resources.requests.memory"]


def test_changes_of_whole_values() -> None:
    assert changes(None, {"a": 1}) == ["."]
    assert changes(1, 1) == []


def test_changes_is_symmetric_in_the_paths_it_reports() -> None:
    before = with_server_defaults(pod())
    after = pod(image="img:2")
    assert sorted(changes(before, after)) == sorted(changes(after, before))
    assert "spec.containers[0].image" in changes(before, after)


def test_zero_values_read_back_absent_and_divisors_are_quantities() -> None:
    """Go's omitempty drops `initialDelaySeconds: 0` and `hostPort: 0`; the apiserver stores a
    divisor `1000m` as `1`: neither is drift (under Recreate it was a restart loop)."""
    desired = {
        "spec": {
            "containers": [
                {
                    "readinessProbe": {"initialDelaySeconds": 0, "periodSeconds": 5},
                    "env": [{"valueFrom": {"resourceFieldRef": {"divisor": "1000m"}}}],
                }
            ]
        }
    }
    live = {
        "spec": {
            "containers": [
                {
                    "readinessProbe": {"periodSeconds": 5},
                    "env": [{"valueFrom": {"resourceFieldRef": {"divisor": "1"}}}],
                }
            ]
        }
    }
    assert drift(desired, live) == []
    live["spec"]["containers"][0]["readinessProbe"]["initialDelaySeconds"] = 3
    assert drift(desired, live) == ["spec.containers[0].readinessProbe.initialDelaySeconds"]
