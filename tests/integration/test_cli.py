"""The `jupyternetes-ssa` command as a real subprocess against a real apiserver.

`crds | kubectl apply`, `reconcile --once` (json and text), `diff` and `reconcile --dry-run` (which
must write nothing), `gc` (refusal, dry run, real deletion that keeps PVCs) and JSON logs. The
cluster is prepared and inspected through the API; only the command under test is a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from reconcile_helpers import edited, notebook_container, put, seed_instance, seed_template

from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.local_cluster.kube import request

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NEW_IMAGE = "quay.io/jupyter/base-notebook:hub-5.2.1"


@pytest.fixture
def env(cluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}


async def cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m jupyternetes_ssa ARGS` in a thread (the test's event loop keeps running)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "jupyternetes_ssa", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def instance_entry(report: dict, namespace: str, name: str) -> dict:
    return next(i for i in report["instances"] if i["instance"] == f"{namespace}/{name}")


async def _running(kube: Kube, ns: str, pod: str) -> dict | None:
    live = await kube.get(POD, ns, pod)
    return live if live and live.get("status", {}).get("phase") == "Running" else None


async def _gone_or_terminating(kube: Kube, res, ns: str, name: str) -> bool:
    live = await kube.get(res, ns, name)
    return live is None or bool(live["metadata"].get("deletionTimestamp"))


async def converged_by_cli(kube: Kube, env: dict[str, str], ns: str) -> dict:
    """Seed template + instance `jovyan`, reconciled by the command; returns the Running pod."""
    await put(kube, seed_template(ns))
    await put(kube, seed_instance(ns, "jovyan"))
    proc = await cli("reconcile", "--once", "-n", ns, env=env)
    assert proc.returncode == 0, proc
    return await wait_for(
        lambda: _running(kube, ns, "jovyan-notebook"), timeout=60, message="pod Running"
    )


async def rv(kube: Kube, res, ns: str, name: str) -> str:
    return (await kube.get(res, ns, name))["metadata"]["resourceVersion"]


# --- crds -----------------------------------------------------------------------------------------


async def test_crds_apply_with_kubectl_server_side(cluster, env: dict[str, str]):
    crds = await cli("crds", env=env)
    assert crds.returncode == 0, crds.stderr
    if cluster.bin_dir is None:
        pytest.skip("kubectl comes with the local backend only")
    kubectl = str(cluster.bin_dir / "kubectl")

    applied = await asyncio.to_thread(
        subprocess.run,
        [kubectl, "apply", "--server-side", "-f", "-"],
        input=crds.stdout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert applied.returncode == 0, applied.stderr
    for name in ("jupyternotebookinstances.kadense.io", "jupyternotebooktemplates.kadense.io"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{name} serverside-applied" in (
            applied.stdout
        )
        crd = await request(
            cluster.api, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        )
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, conditions)
        managers = {m["manager"] for m in crd["metadata"]["managedFields"]}
        assert "kubectl" in managers, managers


# --- reconcile --once -----------------------------------------------------------------------------


async def test_reconcile_once_json_reports_per_instance_actions(
    kube: Kube, env: dict[str, str], namespace: str
):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))

    proc = await cli("reconcile", "--once", "-n", namespace, "--output", "json", env=env)

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    entry = instance_entry(report, namespace, "jovyan")
    assert entry["converged"] is True
    assert entry["error"] == ""
    assert entry["actions"] == {"created": 2}
    assert [(i["item"], i["object"], i["action"]) for i in entry["items"]] == [
        ("pvcs[workspace]", "jovyan-workspace", "created"),
        ("pods[notebook]", "jovyan-notebook", "created"),
    ]
    assert await kube.get(POD, namespace, "jovyan-notebook") is not None
    assert await kube.get(PVC, namespace, "jovyan-workspace") is not None

    again = await cli("reconcile", "--once", "-n", namespace, "--output", "json", env=env)

    assert again.returncode == 0, again.stderr
    assert instance_entry(json.loads(again.stdout), namespace, "jovyan")["actions"] == {
        "unchanged": 2
    }


async def test_reconcile_once_with_a_missing_template_exits_1_with_the_error(
    kube: Kube, env: dict[str, str], namespace: str
):
    await put(kube, seed_instance(namespace, "lost", template="no-such-template"))

    proc = await cli("reconcile", "--once", "-n", namespace, "--output", "json", env=env)

    assert proc.returncode == 1, proc
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    entry = instance_entry(report, namespace, "lost")
    assert entry["converged"] is False
    assert "no-such-template" in entry["error"]
    assert entry["reason"] == "TemplateNotFound"
    assert entry["actions"] == {}
    assert (await kube.list(POD, namespace)).items == []
    assert (await kube.list(PVC, namespace)).items == []


async def test_reconcile_text_summary_ends_with_the_instance_counts(
    kube: Kube, env: dict[str, str], namespace: str
):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))
    await put(kube, seed_instance(namespace, "lost", template="no-such-template"))

    proc = await cli("reconcile", "--once", "-n", namespace, env=env)

    assert proc.returncode == 1, proc
    lines = proc.stdout.rstrip("\n").splitlines()
    assert lines[-1] == "2 instances, 1 not converged, 0 pruned, 0 kept"
    assert f"{namespace}/jovyan: 2 created" in lines
    lost = next(line for line in lines if line.startswith(f"{namespace}/lost:"))
    assert "ERROR TemplateNotFound" in lost and "no-such-template" in lost


async def test_reconcile_output_yaml_is_yaml_or_refused(
    kube: Kube, env: dict[str, str], namespace: str
):
    await put(kube, seed_template(namespace))
    await put(kube, seed_instance(namespace, "jovyan"))

    proc = await cli("reconcile", "--once", "-n", namespace, "--output", "yaml", env=env)

    if proc.returncode == 2:  # refused as a usage error: fine too
        assert "yaml" in proc.stderr
        return
    assert proc.returncode == 0, proc
    report = yaml.safe_load(proc.stdout)
    assert isinstance(report, dict) and report["ok"] is True, proc.stdout


# --- diff and --dry-run ---------------------------------------------------------------------------


async def test_diff_lists_the_changed_field_and_changes_nothing(
    kube: Kube, env: dict[str, str], namespace: str
):
    pod_before = await converged_by_cli(kube, env, namespace)
    await put(
        kube,
        edited(seed_template(namespace), lambda t: notebook_container(t).update(image=NEW_IMAGE)),
    )
    before = {
        "pod": pod_before["metadata"]["resourceVersion"],
        "pvc": await rv(kube, PVC, namespace, "jovyan-workspace"),
        "instance": await rv(kube, INSTANCE, namespace, "jovyan"),
    }

    text = await cli("diff", "-n", namespace, env=env)
    as_json = await cli("diff", "-n", namespace, "--output", "json", env=env)

    assert text.returncode == 0, text
    pod_line = next(line for line in text.stdout.splitlines() if "jovyan-notebook" in line)
    assert "pods[notebook]" in pod_line
    assert "spec.containers[0].image" in pod_line
    assert "jovyan-workspace" not in text.stdout  # the PVC does not change
    assert as_json.returncode == 0, as_json
    items = {
        i["object"]: i
        for i in instance_entry(json.loads(as_json.stdout), namespace, "jovyan")["items"]
    }
    assert "spec.containers[0].image" in items["jovyan-notebook"]["fields"]
    assert items["jovyan-workspace"]["action"] == "unchanged"

    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod["spec"]["containers"][0]["image"] == pod_before["spec"]["containers"][0]["image"]
    assert pod["spec"]["containers"][0]["image"] != NEW_IMAGE
    assert pod["metadata"]["uid"] == pod_before["metadata"]["uid"]
    assert {
        "pod": pod["metadata"]["resourceVersion"],
        "pvc": await rv(kube, PVC, namespace, "jovyan-workspace"),
        "instance": await rv(kube, INSTANCE, namespace, "jovyan"),
    } == before


async def test_reconcile_dry_run_reports_creations_and_writes_nothing(
    kube: Kube, env: dict[str, str], namespace: str
):
    await put(kube, seed_template(namespace))
    instance_rv = (await put(kube, seed_instance(namespace, "jovyan")))["metadata"][
        "resourceVersion"
    ]

    proc = await cli("reconcile", "--dry-run", "-n", namespace, "--output", "json", env=env)

    assert proc.returncode == 0, proc
    entry = instance_entry(json.loads(proc.stdout), namespace, "jovyan")
    assert entry["actions"] == {"created": 2}
    assert entry["statusWritten"] is False
    assert (await kube.list(POD, namespace)).items == []
    assert (await kube.list(PVC, namespace)).items == []
    instance = await kube.get(INSTANCE, namespace, "jovyan")
    assert instance["metadata"]["resourceVersion"] == instance_rv
    assert "status" not in instance or not instance["status"].get("pods")


async def test_reconcile_dry_run_of_a_template_change_writes_nothing(
    kube: Kube, env: dict[str, str], namespace: str
):
    pod_before = await converged_by_cli(kube, env, namespace)
    await put(
        kube,
        edited(seed_template(namespace), lambda t: notebook_container(t).update(image=NEW_IMAGE)),
    )

    proc = await cli("reconcile", "--dry-run", "-n", namespace, env=env)

    assert proc.returncode == 0, proc
    assert "spec.containers[0].image" in proc.stdout
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod["metadata"]["resourceVersion"] == pod_before["metadata"]["resourceVersion"]
    assert pod["spec"]["containers"][0]["image"] != NEW_IMAGE


# --- gc -------------------------------------------------------------------------------------------


async def orphan(cluster, kube: Kube, ns: str, name: str) -> None:
    """Delete the instance but leave its pod (kubectl delete --cascade=orphan), as after a crash
    of whatever should have cleaned up: the pod is ours, labelled for an instance that is gone."""
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}
    path = f"/apis/kadense.io/v1/namespaces/{ns}/jupyternotebookinstances/{name}"
    await request(cluster.api, "DELETE", path, body=body)
    await wait_for(
        lambda: _absent(kube, INSTANCE, ns, name), timeout=60, message="instance deleted"
    )


async def _absent(kube: Kube, res, ns: str, name: str) -> bool:
    return await kube.get(res, ns, name) is None


async def test_gc_without_dry_run_or_yes_exits_2_and_deletes_nothing(
    cluster, kube: Kube, env: dict[str, str], namespace: str
):
    await converged_by_cli(kube, env, namespace)
    await orphan(cluster, kube, namespace, "jovyan")

    proc = await cli("gc", "-n", namespace, env=env)

    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert "--dry-run" in proc.stderr and "--yes" in proc.stderr
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod is not None and not pod["metadata"].get("deletionTimestamp")


async def test_gc_dry_run_lists_the_orphan_and_yes_deletes_it_keeping_the_pvc(
    cluster, kube: Kube, env: dict[str, str], namespace: str
):
    await converged_by_cli(kube, env, namespace)
    pvc_uid = (await kube.get(PVC, namespace, "jovyan-workspace"))["metadata"]["uid"]
    await orphan(cluster, kube, namespace, "jovyan")
    pod_rv = await rv(kube, POD, namespace, "jovyan-notebook")

    dry = await cli("gc", "--dry-run", "-n", namespace, env=env)

    assert dry.returncode == 0, dry
    lines = dry.stdout.rstrip("\n").splitlines()
    assert (
        f"would be pruned Pod {namespace}/jovyan-notebook: its instance jovyan no longer exists"
        in lines
    )
    assert any(
        line.startswith(f"kept PersistentVolumeClaim {namespace}/jovyan-workspace")
        for line in lines
    ), lines
    assert lines[-1] == "0 instances, 0 not converged, 1 would be pruned, 1 kept"
    pod = await kube.get(POD, namespace, "jovyan-notebook")
    assert pod["metadata"]["resourceVersion"] == pod_rv
    assert not pod["metadata"].get("deletionTimestamp")

    real = await cli("gc", "--yes", "-n", namespace, "--output", "json", env=env)

    assert real.returncode == 0, real
    report = json.loads(real.stdout)
    assert [p["object"] for p in report["pruned"]] == [f"Pod {namespace}/jovyan-notebook"]
    assert [k["object"] for k in report["kept"]] == [
        f"PersistentVolumeClaim {namespace}/jovyan-workspace"
    ]
    assert "Retain" in report["kept"][0]["reason"]
    assert report["pruneError"] == ""
    await wait_for(
        lambda: _gone_or_terminating(kube, POD, namespace, "jovyan-notebook"),
        timeout=30,
        message="orphaned pod deleted",
    )
    pvc = await kube.get(PVC, namespace, "jovyan-workspace")
    assert pvc["metadata"]["uid"] == pvc_uid
    assert not pvc["metadata"].get("deletionTimestamp")


# --- logs -----------------------------------------------------------------------------------------


async def test_reconcile_log_format_json_writes_json_lines_to_stderr(
    kube: Kube, env: dict[str, str], namespace: str
):
    await put(kube, seed_instance(namespace, "lost", template="no-such-template"))

    proc = await cli("reconcile", "--once", "-n", namespace, "--log-format", "json", env=env)

    assert proc.returncode == 1, proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "no log lines on stderr"
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"level", "msg"} <= entry.keys(), entry
        entries.append(entry)
    problem = [e for e in entries if e["level"] in ("WARNING", "ERROR")]
    assert any(f"{namespace}/lost" in e["msg"] and "no-such-template" in e["msg"] for e in problem)
    assert proc.stdout.rstrip("\n").splitlines()[-1].startswith("1 instances, 1 not converged")
