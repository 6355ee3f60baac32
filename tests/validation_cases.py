"""The corpus of broken templates and instances, each with the problem it must produce.

Shared by tests/unit/test_validate_corpus.py (offline: `validate`'s files layer) and
tests/integration/test_validate_cluster.py (the `cluster` cases against the real apiserver).
Every case edits the seed example (examples/seed-*.yaml) or is a whole file of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SEED_TEMPLATE = yaml.safe_load((EXAMPLES / "seed-template.yaml").read_text())
SEED_INSTANCE = yaml.safe_load((EXAMPLES / "seed-instance.yaml").read_text())

Edit = Callable[[dict, dict], Any]


@dataclass(frozen=True)
class Case:
    id: str
    path: str  # the field path the problem names ("" for a problem of the whole file)
    words: str  # in the problem's text: what is wrong and what would be valid
    edit: Edit | None = None  # changes (template, instance), copies of the seed example
    raw: str = ""  # instead: the template file's whole text
    file: str = "template"  # the file the problem must name: template or instance
    cluster: str = ""  # the apiserver rejects the rendered object too, with these words

    def documents(self) -> tuple[dict, dict]:
        template, instance = copy.deepcopy(SEED_TEMPLATE), copy.deepcopy(SEED_INSTANCE)
        if self.edit is not None:
            self.edit(template, instance)
        return template, instance


def pod(t: dict) -> dict:
    return t["spec"]["pods"][0]


def pvc(t: dict) -> dict:
    return t["spec"]["pvcs"][0]


def container(t: dict) -> dict:
    return pod(t)["spec"]["containers"][0]


def put(get: Callable[[dict], dict], key: str, value: Any) -> Edit:
    """Set key=value in the map `get` finds in the template."""
    return lambda t, i: get(t).__setitem__(key, value)


def rename(get: Callable[[dict], dict], old: str, new: str) -> Edit:
    return lambda t, i: get(t).__setitem__(new, get(t).pop(old))


def drop(get: Callable[[dict], dict], key: str) -> Edit:
    return lambda t, i: get(t).pop(key)


def var(name: str, value: Any) -> Edit:
    return lambda t, i: i["spec"]["variables"].__setitem__(name, value)


def both(*edits: Edit) -> Edit:
    return lambda t, i: [e(t, i) for e in edits]


def spec(t: dict) -> dict:
    return t["spec"]


def ispec(i: dict) -> dict:
    return i["spec"]


def other(item: dict) -> Edit:
    return lambda t, i: t["spec"].setdefault("otherResources", []).append(item)


P = "pods[notebook]"
C = f"{P}.spec.containers[0]"
V = "pvcs[workspace]"

SHAPE = [
    Case("item-field-lables", f"{P}.lables", 'did you mean "labels"',
         rename(pod, "labels", "lables")),
    Case("item-field-anotations", f"{P}.anotations", 'did you mean "annotations"',
         put(pod, "anotations", {})),
    Case("item-field-resourcename", f"{P}.resourcename", 'did you mean "resourceName"',
         put(pod, "resourcename", "x")),
    Case("item-field-ownedbyinstance", f"{V}.ownedbyinstance", 'did you mean "ownedByInstance"',
         put(pvc, "ownedbyinstance", True)),
    Case("item-field-recreateonchange", f"{P}.recreateonchange",
         'did you mean "recreateOnChange"', put(pod, "recreateonchange", True)),
    Case("item-spec-hello", f"{P}.spec", "not a string", put(pod, "spec", "hello")),
    Case("item-spec-missing", f"{V}.spec", "not null", drop(pvc, "spec")),
    Case("pods-zero", "spec.pods", "must be a list of items, not a number", put(spec, "pods", 0)),
    Case("pvcs-a-map", "spec.pvcs", "not a map", lambda t, i: spec(t).__setitem__(
        "pvcs", {"workspace": pvc(t)})),
    Case("spec-field-pod", "spec.pod", 'did you mean "pods"', rename(spec, "pods", "pod")),
    Case("no-items", "spec", "has no items", lambda t, i: t.__setitem__("spec", {})),
    Case("no-spec", "spec", "must be a map", drop(lambda t: t, "spec")),
    Case("item-a-string", "spec.pods[0]", "must be a map", put(spec, "pods", ["notebook"])),
    Case("item-without-name", "spec.pods[0].name", "not a DNS label", drop(pod, "name")),
    Case("item-name-upper-case", "spec.pods[0].name", "not a DNS label",
         put(pod, "name", "Notebook")),
    Case("item-names-twice", "spec.pvcs[1].name", "two pvcs items are named",
         lambda t, i: spec(t)["pvcs"].append(copy.deepcopy(pvc(t)))),
    Case("labels-a-string", f"{P}.labels", "must be a map", put(pod, "labels", "team")),
    Case("label-key-with-space", f'{P}.labels key "my key"', "not a valid key",
         put(lambda t: pod(t)["labels"], "my key", "x"), cluster="my key"),
    Case("label-value-number", f"{P}.labels.tier", "not a number",
         put(lambda t: pod(t)["labels"], "tier", 1)),
    Case("label-value-ampersand", f"{P}.labels.dept", "not a valid label value",
         put(lambda t: pod(t)["labels"], "dept", "R&D"), cluster="R&D"),
    Case("label-value-64-chars", f"{P}.labels.long", "at most 63",
         put(lambda t: pod(t)["labels"], "long", "a" * 64), cluster="63"),
    Case("label-key-bad-prefix", f'{P}.labels key "Example.com/x"', "not a DNS subdomain",
         put(lambda t: pod(t)["labels"], "Example.com/x", "v"), cluster="Example.com/x"),
    Case("annotation-value-number", f"{P}.annotations.replicas", "not a number",
         put(pod, "annotations", {"replicas": 3})),
    Case("owned-by-instance-a-string", f"{V}.ownedByInstance", "true or false",
         put(pvc, "ownedByInstance", "yes")),
    Case("deletion-policy-on-a-pod", f"{P}.deletionPolicy",
         "applies only to pvcs and otherResources", put(pod, "deletionPolicy", "Delete")),
    Case("deletion-policy-keep", f"{V}.deletionPolicy", "not one of Retain, Delete",
         put(pvc, "deletionPolicy", "Keep")),
    Case("update-strategy-rolling", f"{P}.updateStrategy", "OnRestart, InPlace, Recreate",
         put(pod, "updateStrategy", "Rolling")),
    Case("update-strategy-on-a-pvc", f"{V}.updateStrategy", "applies only to pods",
         put(pvc, "updateStrategy", "InPlace")),
    Case("recreate-on-change-on-a-pvc", f"{V}.recreateOnChange", "applies only to pods",
         put(pvc, "recreateOnChange", True)),
    Case("condition-without-variable", f"{P}.condition", "needs `variable`",
         put(pod, "condition", {"equals": "gpu"})),
    Case("condition-without-operator", f"{P}.condition", "needs an operator",
         put(pod, "condition", {"variable": "profile"})),
    Case("condition-operator-equal", f"{P}.condition.equal", 'did you mean "equals"',
         put(pod, "condition", {"variable": "profile", "equal": "gpu"})),
    Case("condition-in-a-string", f"{P}.condition.in", "list of strings",
         put(pod, "condition", {"variable": "profile", "in": "gpu"})),
    Case("condition-equals-a-number", f"{P}.condition.equals", "must be a string",
         put(pod, "condition", {"variable": "gpus", "equals": 1})),
    Case("patches-a-map", f"{P}.patches", "must be a list", put(pod, "patches", {"merge": {}})),
    Case("patch-field-marge", f"{P}.patches[0].marge", 'did you mean "merge"',
         put(pod, "patches", [{"condition": {"variable": "a", "present": True}, "marge": {}}])),
    Case("resource-name-a-number", f"{V}.resourceName", "non-empty string",
         put(pvc, "resourceName", 5)),
    Case("resource-name-uses-an-item-name", f"{V}.resourceName", "names are not known yet",
         put(pvc, "resourceName", "{jupyternetes.pods.notebook}-home")),
    Case("resource-name-upper-case-text", f"{V}.resourceName", "hashed",
         put(pvc, "resourceName", "Home_{jupyterhub.user.name}")),
    Case("resource-name-lone-brace", f"{V}.resourceName", "unmatched",
         put(pvc, "resourceName", "home-{jupyterhub.user.name")),
    Case("lone-brace-in-the-spec", f"{C}.env[0].value", 'write {{ for a literal "{"',
         put(lambda t: container(t)["env"][0], "value", "${HOME")),
    Case("space-in-a-placeholder", f"{P}.annotations.note", "unmatched",
         put(pod, "annotations", {"note": "{user name}"})),
    Case("instance-namespaces-a-string", "spec.instanceNamespaces", "list of namespace names",
         put(spec, "instanceNamespaces", "default")),
    Case("namespace-selector-match-label", "spec.instanceNamespaceSelector.matchLabel",
         'did you mean "matchLabels"', put(spec, "instanceNamespaceSelector", {"matchLabel": {}})),
    Case("template-name-underscore", "metadata.name", "not a valid name",
         put(lambda t: t["metadata"], "name", "default_template")),
    Case("template-api-version-v2", "apiVersion", "must be kadense.io/v1",
         put(lambda t: t, "apiVersion", "kadense.io/v2")),
    Case("template-namespace-a-number", "metadata.namespace", "not a namespace name",
         put(lambda t: t["metadata"], "namespace", 7)),
    Case("other-without-kind", "otherResources[cfg].kind", "needs kind",
         other({"name": "cfg", "apiVersion": "v1", "data": {}})),
    Case("other-with-metadata", "otherResources[cfg].metadata", "cannot be set",
         other({"name": "cfg", "apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})),
    Case("other-field-dta", "otherResources[cfg].dta", 'did you mean "data"',
         other({"name": "cfg", "apiVersion": "v1", "kind": "ConfigMap", "dta": {}})),
    Case("other-network-policy-as-v1", "otherResources[np].apiVersion", "networking.k8s.io/v1",
         other({"name": "np", "apiVersion": "v1", "kind": "NetworkPolicy", "spec": {}})),
    Case("other-kind-configmpa", "otherResources[cfg].kind", 'did you mean "ConfigMap"',
         other({"name": "cfg", "apiVersion": "v1", "kind": "ConfigMpa", "data": {}})),
]  # fmt: skip

SCHEMA = [
    Case("resources-limit", f"{C}.resources.limit", 'did you mean "limits"',
         put(container, "resources", {"limit": {"cpu": "1"}}), cluster="limit"),
    Case("image-pull-police", f"{C}.imagePullPolice", 'did you mean "imagePullPolicy"',
         put(container, "imagePullPolice", "Always"), cluster="imagePullPolice"),
    Case("image-unquoted-placeholder", f"{C}.image", "quote it: '{image}'",
         put(container, "image", {"image": None}), cluster="image"),
    Case("container-port-a-string", f"{C}.ports[0].containerPort", "must be an integer",
         put(lambda t: container(t)["ports"][0], "containerPort", "8888"),
         cluster="containerPort"),
    Case("container-port-a-placeholder", f"{C}.ports[0].containerPort",
         "placeholders always render text",
         both(put(lambda t: container(t)["ports"][0], "containerPort", "{port}"),
              var("port", "8888")), cluster="containerPort"),
    Case("env-a-map", f"{C}.env", "must be a list", put(container, "env", {"A": "b"}),
         cluster="env"),
    Case("command-a-string", f"{C}.command", "must be a list",
         put(container, "command", "jupyter lab"), cluster="command"),
    Case("restart-policy-sometimes", f"{P}.spec.restartPolicy", "not one of Always, OnFailure",
         put(lambda t: pod(t)["spec"], "restartPolicy", "Sometimes"), cluster="restartPolicy"),
    Case("run-as-user-a-string", f"{P}.spec.securityContext.runAsUser", "must be an integer",
         put(lambda t: pod(t)["spec"], "securityContext", {"runAsUser": "1000"}),
         cluster="runAsUser"),
    Case("tolerations-a-map", f"{P}.spec.tolerations", "must be a list",
         put(lambda t: pod(t)["spec"], "tolerations", {"key": "gpu"}), cluster="tolerations"),
    Case("node-selector-value-a-number", f"{P}.spec.nodeSelector.disk", "must be a string",
         put(lambda t: pod(t)["spec"], "nodeSelector", {"disk": 1}), cluster="nodeSelector"),
    Case("claim-name-lower-case", f"{P}.spec.volumes[0].persistentVolumeClaim.claimname",
         'did you mean "claimName"',
         rename(lambda t: pod(t)["spec"]["volumes"][0]["persistentVolumeClaim"], "claimName",
                "claimname"), cluster="claimname"),
    Case("pvc-access-mode", f"{V}.spec.accessMode", 'did you mean "accessModes"',
         rename(lambda t: pvc(t)["spec"], "accessModes", "accessMode"), cluster="accessMode"),
    Case("memory-4gb", f"{C}.resources.limits.memory", "not a quantity",
         put(container, "resources", {"limits": {"memory": "4GB"}}),
         cluster="quantities must match"),
    Case("storage-with-a-space", f"{V}.spec.resources.requests.storage", "not a quantity",
         put(lambda t: pvc(t)["spec"]["resources"]["requests"], "storage", "1 Gi"),
         cluster="quantities must match"),
    Case("pvc-without-storage", f"{V}.spec.resources.requests.storage", "storage request",
         lambda t, i: pvc(t)["spec"]["resources"].__setitem__("requests", {}),
         cluster="storage"),
    Case("container-name-with-space", f"{C}.name", "not a DNS label",
         put(container, "name", "note book"), cluster="note book"),
    Case("two-containers-one-name", f"{P}.spec.containers[1].name", "two containers",
         lambda t, i: pod(t)["spec"]["containers"].append(copy.deepcopy(container(t))),
         cluster="Duplicate"),
    Case("no-containers", f"{P}.spec.containers", "at least one container",
         put(lambda t: pod(t)["spec"], "containers", []), cluster="containers"),
    Case("no-image", f"{C}.image", "needs an image", drop(container, "image"), cluster="image"),
    Case("mount-of-no-volume", f"{C}.volumeMounts[0].name", 'did you mean "workspace-pvc"',
         put(lambda t: container(t)["volumeMounts"][0], "name", "workspace"),
         cluster="workspace"),
    Case("label-value-from-a-variable", f"{P}.labels.department", "not a valid label value",
         both(put(lambda t: pod(t)["labels"], "department", "{dept}"),
              var("dept", "R&D / Compilers")), file="instance", cluster="R&D / Compilers"),
    Case("quantity-from-a-variable", f"{C}.resources.limits.memory", "not a quantity",
         both(put(container, "resources", {"limits": {"memory": "{mem}"}}), var("mem", "4 GB")),
         file="instance", cluster="quantities must match"),
    Case("service-port-a-string", "otherResources[svc].spec.ports[0].port", "must be an integer",
         other({"name": "svc", "apiVersion": "v1", "kind": "Service",
                "spec": {"ports": [{"port": "80"}]}}), cluster="port"),
]  # fmt: skip

INSTANCE = [
    Case("variable-a-number", 'spec.variables["jupyterhub.user.id"]', "quote it",
         var("jupyterhub.user.id", 1), file="instance"),
    Case("instance-spec-templat", "spec.templat", 'did you mean "template"',
         lambda t, i: ispec(i).__setitem__("templat", ispec(i).pop("template")), file="instance"),
    Case("instance-without-template-name", "spec.template.name", "must name its template",
         lambda t, i: i["spec"]["template"].pop("name"), file="instance"),
    Case("instance-variables-a-list", "spec.variables", "must be a map",
         lambda t, i: i["spec"].__setitem__("variables", ["a"]), file="instance"),
    Case("instance-purge-yes", "spec.purge", "true or false",
         lambda t, i: i["spec"].__setitem__("purge", "yes"), file="instance"),
    Case("sealed-token-keyid", "spec.sealedApiToken.keyid", 'did you mean "keyId"',
         lambda t, i: i["spec"].__setitem__("sealedApiToken", {"keyid": "k", "ciphertext": "c"}),
         file="instance"),
    Case("instance-name-a-number", "metadata.name", "not a valid name",
         lambda t, i: i["metadata"].__setitem__("name", 5), file="instance"),
    Case("instance-without-namespace", "metadata.namespace", "not a namespace name",
         lambda t, i: i["metadata"].pop("namespace"), file="instance"),
    Case("instance-template-namespace-a-number", "spec.template.namespace", "not a namespace",
         lambda t, i: i["spec"]["template"].__setitem__("namespace", 3), file="instance"),
    Case("unknown-variable", f"{C}.image", '"jupyterhub.user.nme"',
         put(container, "image", "{jupyterhub.user.nme}"), file="instance"),
]  # fmt: skip

_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)

FILES = [
    Case("alias-bomb", "", "expands to more than", raw=_BOMB),
    Case("self-referencing-alias", "", "refers to itself", raw="a: &a [1, *a]\n"),
    Case("deep-nesting", "", "nested deeper than",
         raw="".join(f"{' ' * n}k{n}:\n" for n in range(200)) + " " * 200 + "v: 1\n"),
    Case("date-key", "", "a date", raw="2024-01-01: x\n"),
    Case("date-value", "", "a date", raw="kind: JupyterNotebookTemplate\nwhen: 2024-01-01\n"),
    Case("nan", "", "not a number JSON can carry", raw="x: .nan\n"),
    Case("keys-1-and-quoted-1", "", "keys must be strings", raw='1: a\n"1": b\n'),
    Case("duplicate-key", "", "also on line 1", raw="kind: A\nkind: B\n"),
    Case("key-on", "", "a boolean", raw="on: push\n"),
    Case("binary", "", "binary data", raw="x: !!binary aGVsbG8=\n"),
    Case("not-utf-8", "", "not UTF-8", raw="\udcff"),
    Case("too-big", "", "larger than", raw="# " + "x" * (2 * 1024 * 1024) + "\n"),
    Case("not-yaml", "", "not valid YAML", raw="kind: [a\nspec: }\n"),
    Case("a-list", "", "not a Kubernetes object", raw="- a\n- b\n"),
    Case("kind-typo", "kind", 'did you mean "JupyterNotebookTemplate"',
         raw="kind: JupyterNotebookTemplat\nmetadata: {name: t}\n"),
    Case("unquoted-placeholder-in-yaml", f"{C}.image", "quote it: '{jupyterhub.image}'",
         raw=(EXAMPLES / "seed-template.yaml").read_text().replace(
             "image: quay.io/jupyter/datascience-notebook:hub-5.2.1",
             "image: {jupyterhub.image}")),
]  # fmt: skip

CASES = SHAPE + SCHEMA + INSTANCE + FILES
CLUSTER_CASES = [c for c in CASES if c.cluster]
