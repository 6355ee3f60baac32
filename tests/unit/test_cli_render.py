"""The `jupyternetes-ssa` command run as a real subprocess, without a cluster.

`render` (success, json, template selection, every kind of bad input), `crds`, `--version`,
`--help` on every command, and what the cluster commands do when there is no usable cluster.
Each check looks at the exit code, stdout and stderr as a user or a script would.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jupyternetes_ssa import __version__

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SEED_TEMPLATE = EXAMPLES / "seed-template.yaml"
SEED_INSTANCE = EXAMPLES / "seed-instance.yaml"
SEED_NAME = "8dc366d8a0f05869bfdb6e7eb3d83f65"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m jupyternetes_ssa ARGS`, from the repo root, with a deadline."""
    return subprocess.run(
        [sys.executable, "-m", "jupyternetes_ssa", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def render(template: Path, instance: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("render", "--template", str(template), "--instance", str(instance), *extra)


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    """A failure a user can act on: non-zero, nothing on stdout, one message, no traceback."""
    assert proc.returncode != 0, proc
    assert proc.stdout == "", proc.stdout
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)


def pod_of(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "Pod")


# --- render: success ------------------------------------------------------------------------------


def test_render_seed_prints_the_pvc_then_the_pod_as_multi_document_yaml():
    proc = render(SEED_TEMPLATE, SEED_INSTANCE)

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "\n---\n" in proc.stdout
    docs = list(yaml.safe_load_all(proc.stdout))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("PersistentVolumeClaim", f"{SEED_NAME}-workspace"),
        ("Pod", f"{SEED_NAME}-notebook"),
    ]
    pod = docs[1]
    assert pod["metadata"]["namespace"] == "default"
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == f"{SEED_NAME}-workspace"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["JUPYTERHUB_USER"] == "jovyan"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/jovyan/"
    assert "{" not in proc.stdout  # every placeholder was filled


def test_render_json_is_a_list_of_the_same_objects():
    as_yaml = list(yaml.safe_load_all(render(SEED_TEMPLATE, SEED_INSTANCE).stdout))

    proc = render(SEED_TEMPLATE, SEED_INSTANCE, "--output", "json")

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
    assert [i["kind"] for i in doc["items"]] == ["PersistentVolumeClaim", "Pod"]
    assert doc["items"] == as_yaml


def decoy(template: dict, namespace: str, image: str) -> dict:
    """The seed template under another namespace, with a recognisable image."""
    other = copy.deepcopy(template)
    other["metadata"]["namespace"] = namespace
    other["spec"]["pods"][0]["spec"]["containers"][0]["image"] = image
    return other


@pytest.mark.parametrize("seed_last", [False, True], ids=["seed-first", "seed-last"])
def test_render_picks_the_template_the_instance_names_from_a_file_of_several(
    tmp_path: Path, seed_last: bool
):
    seed = load(SEED_TEMPLATE)
    others = [
        load(EXAMPLES / "rich-template.yaml"),
        decoy(seed, "elsewhere", "example.org/wrong-namespace:1"),
    ]
    docs = [*others, seed] if seed_last else [seed, *others]
    templates = write_docs(tmp_path / "templates.yaml", docs)

    proc = render(templates, SEED_INSTANCE)

    assert proc.returncode == 0, proc.stderr
    pod = pod_of(list(yaml.safe_load_all(proc.stdout)))
    assert pod["spec"]["containers"][0]["image"] == "quay.io/jupyter/datascience-notebook:hub-5.2.1"
    assert pod["metadata"]["labels"]["jupyternetes.kadense.io/template"] == "default-template"
    assert pod["metadata"]["labels"]["jupyternetes.kadense.io/templateNamespace"] == "kadense"

    rich = render(templates, EXAMPLES / "rich-instance.yaml")

    assert rich.returncode == 0, rich.stderr
    rich_pod = pod_of(list(yaml.safe_load_all(rich.stdout)))
    assert rich_pod["metadata"]["labels"]["jupyternetes.kadense.io/template"] == "rich-template"


# --- render: errors -------------------------------------------------------------------------------


def test_render_unknown_variable_names_the_variable_and_the_field_path(tmp_path: Path):
    template = load(SEED_TEMPLATE)
    template["spec"]["pods"][0]["spec"]["containers"][0]["image"] = "{no.such.variable}"
    path = write_docs(tmp_path / "template.yaml", [template])

    proc = render(path, SEED_INSTANCE)

    assert_clean_failure(
        proc,
        "no.such.variable",
        "pods[notebook].spec.containers[0].image",
        f"default/{SEED_NAME}",
    )


def test_render_unknown_variable_in_an_env_value_gives_its_index(tmp_path: Path):
    template = load(SEED_TEMPLATE)
    env = template["spec"]["pods"][0]["spec"]["containers"][0]["env"]
    index = next(i for i, e in enumerate(env) if e["name"] == "JUPYTERHUB_USER")
    env[index]["value"] = "{jupyterhub.user.nickname}"
    path = write_docs(tmp_path / "template.yaml", [template])

    proc = render(path, SEED_INSTANCE)

    assert_clean_failure(
        proc, "jupyterhub.user.nickname", f"pods[notebook].spec.containers[0].env[{index}].value"
    )


def test_render_lone_brace_is_an_error_at_its_path(tmp_path: Path):
    template = load(SEED_TEMPLATE)
    template["spec"]["pvcs"][0]["spec"]["resources"]["requests"]["storage"] = "1Gi{"
    path = write_docs(tmp_path / "template.yaml", [template])

    proc = render(path, SEED_INSTANCE)

    assert_clean_failure(proc, "pvcs[workspace].spec.resources.requests.storage", "{{")


def test_render_template_missing_from_the_file_names_it(tmp_path: Path):
    path = write_docs(
        tmp_path / "templates.yaml",
        [load(EXAMPLES / "rich-template.yaml"), decoy(load(SEED_TEMPLATE), "elsewhere", "x:1")],
    )

    proc = render(path, SEED_INSTANCE)

    assert_clean_failure(proc, '"default-template"', '"kadense"', "spec.template.name")


def test_render_unreadable_yaml_names_the_file_and_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: kadense.io/v1\nkind: [JupyterNotebookTemplate\nspec: }\n")

    proc = render(path, SEED_INSTANCE)

    assert_clean_failure(proc, str(path), "line 2")


def test_render_instance_file_with_two_instances_is_refused(tmp_path: Path):
    second = load(SEED_INSTANCE)
    second["metadata"]["name"] = "another"
    path = write_docs(tmp_path / "instances.yaml", [load(SEED_INSTANCE), second])

    proc = render(SEED_TEMPLATE, path)

    assert_clean_failure(proc, str(path), "exactly one JupyterNotebookInstance", "found 2")


def test_render_instance_file_without_an_instance_is_refused():
    proc = render(SEED_TEMPLATE, SEED_TEMPLATE)

    assert_clean_failure(proc, str(SEED_TEMPLATE), "found 0")


def test_render_missing_file_names_it(tmp_path: Path):
    missing = tmp_path / "absent.yaml"

    proc = render(missing, SEED_INSTANCE)

    assert_clean_failure(proc, str(missing), "No such file")


@pytest.mark.parametrize("which", ["template", "instance"])
def test_render_yaml_that_is_not_a_mapping_is_a_clean_error(tmp_path: Path, which: str):
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    template, instance = (path, SEED_INSTANCE) if which == "template" else (SEED_TEMPLATE, path)

    proc = render(template, instance)

    assert_clean_failure(proc, str(path))


def test_render_file_that_is_not_text_is_a_clean_error(tmp_path: Path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")

    proc = render(path, SEED_INSTANCE)

    assert_clean_failure(proc, str(path))


# --- crds, --version, --help ----------------------------------------------------------------------


def test_crds_prints_two_custom_resource_definitions_as_multi_document_yaml():
    proc = cli("crds")

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition"] * 2
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(by_kind) == {"JupyterNotebookTemplate", "JupyterNotebookInstance"}
    for kind, doc in by_kind.items():
        assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
        assert doc["spec"]["group"] == "kadense.io"
        assert doc["metadata"]["name"] == f"{doc['spec']['names']['plural']}.kadense.io", kind
        assert [v["name"] for v in doc["spec"]["versions"] if v["served"]] == ["v1"]
    instance_v1 = by_kind["JupyterNotebookInstance"]["spec"]["versions"][0]
    assert "status" in instance_v1["subresources"]


def test_version_prints_the_package_version():
    proc = cli("--version")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == __version__
    assert proc.stderr == ""


def test_top_level_help_lists_every_command():
    proc = cli("--help")

    assert proc.returncode == 0, proc.stderr
    for command in ("render", "crds", "reconcile", "diff", "gc", "local-cluster"):
        assert command in proc.stdout, command


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["render"], "--template"),
        (["crds"], "--help"),
        (["reconcile"], "--once"),
        (["diff"], "--namespace"),
        (["gc"], "--dry-run"),
        (["local-cluster"], "status"),
        (["local-cluster", "up"], "--state-dir"),
        (["local-cluster", "down"], "--state-dir"),
        (["local-cluster", "env"], "--state-dir"),
        (["local-cluster", "status"], "--json"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_help_of_every_command_exits_0_and_describes_it(command: list[str], option: str):
    proc = cli(*command, "--help", env={**os.environ, "COLUMNS": "200"})

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert f"Usage: python -m jupyternetes_ssa {' '.join(command)} [OPTIONS]" in proc.stdout
    assert option in proc.stdout


# --- cluster commands without a usable cluster ----------------------------------------------------

CLUSTER_COMMANDS = [
    ["reconcile", "--once"],
    ["reconcile", "--health-port=0"],  # continuous
    ["diff"],
    ["gc", "--dry-run"],
]


def dead_kubeconfig(path: Path) -> Path:
    """A well-formed kubeconfig whose apiserver does not listen (port 1 on loopback)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "dead", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "dead"}}],
        "current-context": "dead",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("command", CLUSTER_COMMANDS, ids=" ".join)
def test_cluster_command_with_an_unreachable_apiserver_is_a_clean_error(
    tmp_path: Path, command: list[str]
):
    env = {**os.environ, "KUBECONFIG": str(dead_kubeconfig(tmp_path / "dead.kubeconfig"))}

    proc = cli(*command, env=env)

    assert_clean_failure(proc)


@pytest.mark.parametrize("command", CLUSTER_COMMANDS, ids=" ".join)
def test_cluster_command_with_a_missing_kubeconfig_is_a_clean_error(
    tmp_path: Path, command: list[str]
):
    missing = tmp_path / "absent.kubeconfig"

    proc = cli(*command, env={**os.environ, "KUBECONFIG": str(missing)})

    assert_clean_failure(proc, str(missing))


def test_gc_without_a_decision_exits_2_before_touching_any_cluster(tmp_path: Path):
    env = {**os.environ, "KUBECONFIG": str(dead_kubeconfig(tmp_path / "dead.kubeconfig"))}
    for flags in ([], ["--dry-run", "--yes"]):
        proc = cli("gc", *flags, env=env)

        assert proc.returncode == 2, (flags, proc)
        assert proc.stdout == ""
        assert "--dry-run" in proc.stderr and "--yes" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_reconcile_rejects_an_unknown_log_level_cleanly(tmp_path: Path):
    env = {**os.environ, "KUBECONFIG": str(dead_kubeconfig(tmp_path / "dead.kubeconfig"))}

    proc = cli("reconcile", "--once", "--log-level", "bogus", env=env)

    assert proc.returncode != 0, proc
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "bogus" in proc.stderr.lower()
