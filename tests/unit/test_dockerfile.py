"""What we ship for installation, checked offline: the Dockerfile and examples/deploy/.

The image cannot be built here (no Docker engine), so the Dockerfile is parsed and its essentials
checked (multi-stage, wheel built in the first stage, venv in the second, numeric non-root USER,
the console script as ENTRYPOINT, no Go toolchain), and its install steps are repeated on this
machine: the build stage's COPYs into a fresh context, `pip wheel` there, the wheel into a fresh
virtualenv, and `jupyternetes-ssa --version` / `crds` from that virtualenv (which proves the wheel
carries crds/). Offline: the wheel's dependencies come from the running environment, not PyPI.

The manifests: copies equal their originals, the ClusterRole and the Role grant exactly the
rights the reconciler uses, the workloads are hardened as documented, and every container's
arguments parse with the real command line.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
import yaml

from jupyternetes_ssa import __version__
from jupyternetes_ssa.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "examples" / "deploy"


# --- Dockerfile -----------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): enough of the Dockerfile grammar for the checks below."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each plain COPY (not --from) of a stage."""
    found = []
    for arg in stage.all("COPY"):
        words = shlex.split(arg)
        if any(w.startswith("--from") for w in words):
            continue
        *sources, dest = [w for w in words if not w.startswith("--")]
        found.append((sources, dest))
    return found


def test_two_stages_on_python_slim_wheel_first_then_a_venv(dockerfile):
    _, stages = dockerfile
    assert len(stages) == 2, [s.base for s in stages]
    build, final = stages
    assert build.base == final.base == "python:3.11-slim"
    assert build.name, "the build stage is named, for COPY --from"
    assert any(re.search(r"\bpip wheel\b|\bpython -m build\b", r) for r in build.all("RUN"))
    assert any(f"--from={build.name}" in c for c in final.all("COPY"))
    install = " ".join(final.all("RUN"))
    assert "python -m venv /opt/venv" in install
    assert re.search(r"/opt/venv/bin/pip install [^&]*\.whl", install), install


def test_runs_as_a_numeric_non_root_user(dockerfile):
    _, (_, final) = dockerfile
    users = final.all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]  # runAsNonRoot can verify a number
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1]
    final_user_index = max(i for i, (kw, _) in enumerate(final.instructions) if kw == "USER")
    later = [kw for kw, _ in final.instructions[final_user_index:]]
    assert "RUN" not in later, "nothing should run as root after USER"


def test_the_entrypoint_is_the_console_script_in_exec_form(dockerfile):
    _, (_, final) = dockerfile
    (entrypoint,) = final.all("ENTRYPOINT")
    argv = yaml.safe_load(entrypoint)  # exec form is a JSON array
    assert isinstance(argv, list) and len(argv) == 1, entrypoint
    assert Path(argv[0]).name == "jupyternetes-ssa"
    assert argv[0].startswith("/opt/venv/bin/")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "jupyternetes-ssa" in scripts


def test_no_go_toolchain_and_no_secrets_in_the_image(dockerfile):
    text = DOCKERFILE.read_text().lower()
    for word in ("golang", "go build", "go install", "apt-get install", "/usr/local/go"):
        assert word not in text, word
    _, stages = dockerfile
    for stage in stages:
        assert not stage.all("ADD"), "COPY only: no remote ADD"
        assert not any(re.search(r"token|password", e, re.I) for e in stage.all("ENV"))


def test_the_build_context_holds_exactly_what_the_build_stage_copies(dockerfile):
    """.dockerignore is an allow-list; each COPY source must be allowed, and exist."""
    _, (build, _) = dockerfile
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = {src.rstrip("/") for srcs, _ in copies(build) for src in srcs}
    assert sources == allowed, (sources, allowed)
    for src in sources:
        assert (REPO / src).exists(), src
    assert "*" in (REPO / ".dockerignore").read_text().splitlines()


def _hatchling_available() -> bool:
    return importlib.util.find_spec("hatchling") is not None


def test_the_dockerfile_install_steps_give_a_working_command(dockerfile, tmp_path: Path):
    """The build stage's COPYs, `pip wheel`, a fresh venv, the wheel in it, the command runs."""
    assert _hatchling_available(), (
        "building the wheel offline needs hatchling in this environment: pip install hatchling"
    )
    _, (build, _) = dockerfile
    context = tmp_path / "context"
    context.mkdir()
    for sources, dest in copies(build):
        for src in sources:
            target = context / dest if dest not in ("./", ".") else context / Path(src).name
            if (REPO / src).is_dir():
                shutil.copytree(
                    REPO / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy2(REPO / src, target)

    def run(*argv: str | Path, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
        return done

    dist = tmp_path / "dist"
    # As the Dockerfile, minus the network: no build isolation (hatchling is already here).
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        dist,
        ".",
        cwd=context,
    )
    (wheel,) = dist.glob("jupyternetes_ssa-*.whl")
    assert wheel.name.startswith(f"jupyternetes_ssa-{__version__}-")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    # The dependencies: this environment's, instead of PyPI's (tests stay offline).
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = Path(purelib.stdout.strip()) / "zz_test_dependencies.pth"
    deps.write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(python, "-m", "pip", "check")

    where = run(python, "-c", "import jupyternetes_ssa; print(jupyternetes_ssa.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(venv), "imported from the checkout"
    command = venv / "bin" / "jupyternetes-ssa"  # what ENTRYPOINT runs (/opt/venv/bin/...)
    assert run(command, "--version").stdout.strip() == __version__
    printed = run(command, "crds").stdout
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(printed) if d}
    assert names == {
        "jupyternotebookinstances.kadense.io",
        "jupyternotebooktemplates.kadense.io",
    }
    for path in sorted((REPO / "crds").glob("*.yaml")):
        assert path.read_text().strip() in printed, path.name


# --- examples/deploy --------------------------------------------------------------------------


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(path: Path, kind: str) -> dict:
    (doc,) = [d for d in load(path) if d["kind"] == kind]
    return doc


@pytest.mark.parametrize(
    ("copy", "original"),
    [
        ("crds/jupyternotebookinstance.yaml", "crds/jupyternotebookinstance.yaml"),
        ("crds/jupyternotebooktemplate.yaml", "crds/jupyternotebooktemplate.yaml"),
        ("hub-rbac/hub-rbac.yaml", "examples/hub-rbac.yaml"),
    ],
)
def test_copies_equal_their_originals(copy: str, original: str):
    """kustomize cannot load files outside a kustomization's directory, hence copies."""
    assert (DEPLOY / copy).read_text() == (REPO / original).read_text(), (
        f"cp {original} examples/deploy/{copy}"
    )


def test_every_crd_is_in_the_crds_kustomization():
    listed = yaml.safe_load((DEPLOY / "crds" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))


# The reconciler's rights, derived from every apiserver call in jupyternetes_ssa/ (kube.py's
# callers): changing them must be a decision, made here and in the README at the same time.
RECONCILER_RULES = {
    ("kadense.io", "jupyternotebookinstances"): {"get", "list", "watch"},
    ("kadense.io", "jupyternotebooktemplates"): {"get", "list", "watch"},
    ("kadense.io", "jupyternotebookinstances/status"): {"patch"},
    ("kadense.io", "jupyternotebookinstances/finalizers"): {"update"},
    ("", "pods"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"list", "watch", "create", "patch"},  # events.py records on instances
}


def flatten(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_the_cluster_role_and_the_role_grant_exactly_what_the_reconciler_uses():
    cluster = one(DEPLOY / "rbac" / "cluster" / "clusterrole.yaml", "ClusterRole")
    namespaced = one(DEPLOY / "rbac" / "namespace" / "role.yaml", "Role")
    assert flatten(cluster["rules"]) == RECONCILER_RULES
    assert flatten(namespaced["rules"]) == RECONCILER_RULES
    assert "*" not in str(cluster["rules"])


def test_leader_election_may_only_touch_its_own_lease():
    role = one(DEPLOY / "rbac" / "leader-election" / "role.yaml", "Role")
    by_verbs = {tuple(r["verbs"]): r for r in role["rules"]}
    assert set(by_verbs) == {("create",), ("get", "update")}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
    assert by_verbs[("get", "update")]["resourceNames"] == ["jupyternetes-ssa"]


def containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec["containers"]}


def assert_hardened(pod_spec: dict, container: dict) -> None:
    pod_sc, sc = pod_spec.get("securityContext", {}), container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert int(sc.get("runAsUser", pod_sc.get("runAsUser", 0))) > 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]


def reconcile_args_parse(args: list[str]) -> dict:
    """Parse container args with the real CLI (as the image's ENTRYPOINT would); the params."""
    group = typer.main.get_command(app)
    assert args[0] in group.commands, args  # type: ignore[attr-defined]
    command = group.commands[args[0]]  # type: ignore[attr-defined]
    return command.make_context(args[0], list(args[1:])).params


def test_the_cronjob_runs_one_pass_without_overlap_or_pile_up():
    cronjob = one(DEPLOY / "workload" / "cronjob" / "cronjob.yaml", "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] < 120  # before the next run of */2
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "jupyternetes-ssa"
    reconciler = containers(pod)["reconciler"]
    assert_hardened(pod, reconciler)
    params = reconcile_args_parse(reconciler["args"])
    assert params["once"] is True and params["leader_elect"] is False


def test_the_deployment_is_two_leader_elected_replicas_with_probes():
    deployment = one(DEPLOY / "workload" / "continuous" / "deployment.yaml", "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    reconciler = containers(pod)["reconciler"]
    assert_hardened(pod, reconciler)
    params = reconcile_args_parse(reconciler["args"])
    assert params["once"] is False and params["leader_elect"] is True
    assert params["lease_namespace"] == "$(POD_NAMESPACE)"
    assert params["health_port"] == 8080
    env = {e["name"]: e for e in reconciler["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    ports = {p["name"]: p["containerPort"] for p in reconciler["ports"]}
    assert ports == {"http-metrics": 8080}
    assert reconciler["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert reconciler["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}


@pytest.mark.parametrize("mode", ["cronjob", "continuous"])
def test_the_namespaced_overlays_add_exactly_namespace_from_the_pod(mode: str):
    kustomization = yaml.safe_load(
        (DEPLOY / "namespaced" / mode / "kustomization.yaml").read_text()
    )
    assert "../../rbac/namespace" in kustomization["resources"]
    assert "../../rbac/cluster" not in kustomization["resources"]
    (patch,) = kustomization["patches"]
    (op,) = yaml.safe_load(patch["patch"])
    assert op["op"] == "add" and op["path"].endswith("/args/-")
    assert op["value"] == "--namespace=$(POD_NAMESPACE)"


def test_the_sidecar_holds_its_token_and_the_hub_container_does_not():
    deployment = one(DEPLOY / "sidecar" / "hub-deployment.yaml", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "jupyternetes-ssa"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in pod["volumes"]}
    projected = volumes["reconciler-token"]["projected"]["sources"]
    assert any("serviceAccountToken" in s for s in projected)
    assert volumes["hub-token"]["secret"]["secretName"] == "jupyterhub-token"
    token = one(DEPLOY / "sidecar" / "hub-token.yaml", "Secret")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "jupyterhub"
    sa_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    mounts = {
        name: {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        for name, c in containers(pod).items()
    }
    assert mounts["reconciler"]["reconciler-token"] == sa_path
    assert mounts["hub"]["hub-token"] == sa_path
    assert "reconciler-token" not in mounts["hub"]
    assert "hub-token" not in mounts["reconciler"]
    reconciler = containers(pod)["reconciler"]
    assert_hardened(pod, reconciler)
    params = reconcile_args_parse(reconciler["args"])
    assert params["namespace"] == ["$(POD_NAMESPACE)"]


def test_the_z2jh_values_use_our_spawner_and_not_kubespawners_rights():
    values = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())
    assert values["rbac"]["create"] is False
    assert values["hub"]["serviceAccount"] == {"create": False, "name": "jupyterhub"}
    config = "\n".join(values["hub"]["extraConfig"].values())
    assert 'c.JupyterHub.spawner_class = "jupyternetes"' in config
    hub_sa = one(REPO / "examples" / "hub-rbac.yaml", "ServiceAccount")
    assert hub_sa["metadata"]["name"] == "jupyterhub"
    dockerfile = (DEPLOY / "hub-image" / "Dockerfile").read_text()
    assert "quay.io/jupyterhub/k8s-hub" in dockerfile and "jupyternetes-ssa[hub]" in dockerfile
