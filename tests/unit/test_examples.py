"""Every example instance in examples/ renders against the template it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jupyternetes_ssa import labels
from jupyternetes_ssa.names import is_dns_label, safe_name
from jupyternetes_ssa.render import render, select_template
from jupyternetes_ssa.types import SECTIONS, Rendered

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def docs() -> list[dict]:
    return [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict)
    ]


def of_kind(kind: str) -> list[dict]:
    return [d for d in docs() if d.get("kind") == kind]


def instance_named(name: str) -> dict:
    return next(d for d in of_kind("JupyterNotebookInstance") if d["metadata"]["name"] == name)


def render_example(instance: dict) -> Rendered:
    return render(select_template(of_kind("JupyterNotebookTemplate"), instance), instance)


INSTANCES = of_kind("JupyterNotebookInstance")


def test_examples_include_seed_and_rich_pairs():
    names = {d["metadata"]["name"] for d in of_kind("JupyterNotebookTemplate")}
    assert {"default-template", "rich-template"} <= names


@pytest.mark.parametrize("instance", INSTANCES, ids=lambda d: d["metadata"]["name"])
def test_every_example_renders_valid_objects(instance):
    out = render_example(instance)
    sections = [i.section for i in out.items]
    assert sections and sections == sorted(sections, key=list(SECTIONS).index)
    for rendered in out.items:
        meta = rendered.manifest["metadata"]
        assert is_dns_label(meta["name"])
        assert meta["namespace"] == instance["metadata"]["namespace"]
        assert meta["labels"][labels.MANAGED_BY] == labels.MANAGED_BY_VALUE


def seed() -> Rendered:
    return render_example(instance_named("8dc366d8a0f05869bfdb6e7eb3d83f65"))


def test_seed_pvc_first_and_pod_mounts_it():
    out = seed()
    pvc, pod = out.items
    assert pvc.ref.kind == "PersistentVolumeClaim"
    assert pvc.name == "8dc366d8a0f05869bfdb6e7eb3d83f65-workspace"
    assert pod.name == "8dc366d8a0f05869bfdb6e7eb3d83f65-notebook"
    volume = pod.manifest["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc.name
    assert pvc.deletion_policy == "Retain"


def test_seed_env_and_labels():
    pod = seed().items[-1]
    container = pod.manifest["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JUPYTERHUB_USER"] == "jovyan"
    assert env["JPY_API_TOKEN"] == "852dc4bd4e4e4360b7ae94cffa4f1c76"
    assert env["JUPYTERHUB_API_URL"] == "http://hub.kadense.svc.cluster.local:8081/hub/api"
    assert env["JUPYTERHUB_OAUTH_SCOPES"] == (
        '["access:servers!server=jovyan/", "access:servers!user=jovyan"]'
    )
    assert env["JUPYTERHUB_HOST"] is None
    assert container["volumeMounts"][0]["mountPath"] == "/home/jovyan/work"
    pod_labels = pod.manifest["metadata"]["labels"]
    assert pod_labels["jupyternetes.kadense.io/userId"] == "1"
    assert pod_labels[labels.TEMPLATE_NAMESPACE] == "kadense"
    assert pod_labels[labels.INSTANCE_NAMESPACE] == "default"
    assert "ownerReferences" not in pod.manifest["metadata"]  # the seed instance has no uid


def rich() -> Rendered:
    return render_example(instance_named("ba7c142f4ed15a5092176cfb6e55499e"))


def test_rich_names_and_policies():
    home, scratch, pod = rich().items
    assert home.name == safe_name("home-alice.smith@example.org")
    assert home.name.startswith("home-alice-smith-example-org---")
    assert (home.deletion_policy, scratch.deletion_policy) == ("Retain", "Delete")
    assert "ownerReferences" not in home.manifest["metadata"]
    assert scratch.manifest["metadata"]["ownerReferences"][0]["controller"] is True
    assert pod.update_strategy == "Recreate"  # recreateOnChange: true
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod.manifest["spec"]["volumes"][:2]]
    assert claims == [home.name, scratch.name]


def test_rich_escaped_braces_and_placeholder_keys():
    pod = rich().items[-1].manifest
    spec = pod["spec"]
    command = spec["containers"][0]["command"][-1]
    assert "${HOME}/.jupyter/" in command and 'PATH="${HOME}/.local/bin:${PATH}"' in command
    assert spec["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "cloud.google.com/gke-nodepool": "user-pool",
    }
    assert spec["tolerations"][1]["key"] == "cloud.google.com/gke-nodepool"
    assert pod["metadata"]["annotations"]["jupyternetes.example.org/profile"] == (
        '{"profile": "data science {large}", "user": "alice.smith@example.org"}'
    )
    assert spec["initContainers"][0]["name"] == "prepare-home"
    assert spec["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert spec["volumes"][2]["configMap"]["name"] == "jupyter-server-config"
    assert spec["volumes"][3]["secret"]["secretName"] == "hub-ca-jupyterhub"
    assert pod["metadata"]["labels"][labels.TEMPLATE_NAMESPACE] == "jupyterhub"
    assert pod["metadata"]["namespace"] == "jupyterhub-users"


def test_profiles_example_switches_items_with_the_profile():
    gpu = instance_named("6a9d3f1c0b2e4d5f8a7b6c5d4e3f2a1b")
    kinds = [i.manifest["kind"] for i in render_example(gpu).items]
    assert kinds == [
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Service",
        "NetworkPolicy",
        "Pod",
        "Pod",
    ]
    cpu = {
        **gpu,
        "spec": {**gpu["spec"], "variables": {**gpu["spec"]["variables"], "profile": "cpu"}},
    }
    items = {i.item for i in render_example(cpu).items}
    assert "scratch" not in items and "gpu-exporter" not in items
    assert {"home", "settings", "notebook", "isolate"} <= items


def notebook_pod(instance_name: str) -> dict:
    items = render_example(instance_named(instance_name)).items
    return next(i.manifest for i in items if i.section == "pods" and i.item == "notebook")


def test_profiles_example_one_template_three_flavours():
    gpu, large, standard = (
        notebook_pod(n)
        for n in (
            "6a9d3f1c0b2e4d5f8a7b6c5d4e3f2a1b",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "1a2b3c4d5e6f708192a3b4c5d6e7f809",
        )
    )
    flavour = "jupyternetes.example.org/flavour"
    assert [p["metadata"]["labels"][flavour] for p in (gpu, large, standard)] == [
        "gpu",
        "large",
        "standard",
    ]
    notebooks = [p["spec"]["containers"][0] for p in (gpu, large, standard)]
    assert [c["resources"]["limits"] for c in notebooks] == [
        {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
        {"cpu": "8", "memory": "32Gi"},
        {"cpu": "2", "memory": "4Gi"},
    ]
    assert [c["image"].split(":")[0] for c in notebooks] == [
        "quay.io/jupyter/pytorch-notebook",
        "quay.io/jupyter/scipy-notebook",
        "quay.io/jupyter/scipy-notebook",
    ]
    assert [[v["name"] for v in p["spec"]["volumes"]] for p in (gpu, large, standard)] == [
        ["home", "settings", "scratch"],
        ["home", "settings", "scratch"],
        ["home", "settings"],
    ]
    assert [m["mountPath"] for m in notebooks[1]["volumeMounts"]][-1] == "/scratch"
    assert gpu["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nodeSelector" not in standard["spec"] and "tolerations" not in large["spec"]
    # what is written once is the same everywhere
    assert len({(str(c["ports"]), str(c["command"])) for c in notebooks}) == 1
    assert [[e["name"] for e in c["env"]] for c in notebooks] == [
        ["JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER"]
    ] * 3
