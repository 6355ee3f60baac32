"""The Kubernetes side of validation: objects against the API's schemas, and metadata rules.

The schemas are the strict JSON schemas (unknown fields are errors) that the `kubernetes-validate`
package ships, read as data (importing that package, or jsonschema, costs seconds): the walk is
ours, because Kubernetes' schemas use a handful of keywords and a message must be able to list
the fields that would be valid. On top of them, the apiserver rules that templates often break
(names, quantities, mounts, enums the schemas only describe in prose). Pure: no I/O but the
package's data file, read once.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.names import is_dns_label, is_label_value
from jupyternetes_ssa.render import child_path
from jupyternetes_ssa.types import Manifest

KUBERNETES_VERSION = "1.36.0"  # the schemas used: kubernetes-validate's for our minor
MINOR = KUBERNETES_VERSION.rpartition(".")[0]
# What a placeholder becomes when no instance is given: strings holding it are not judged.
PROBE = "\x00"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?")
MAX_ANNOTATIONS_BYTES = 256 * 1024


class Problems(list[RenderError]):
    """The problems of one object, all under one subject."""

    def __init__(self, subject: str):
        super().__init__()
        self.subject = subject

    def add(self, path: str, message: str, fix: str = "") -> None:
        self.append(RenderError(message, subject=self.subject, path=path, fix=fix))


def quote(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def describe(value: Any) -> str:
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value.values())) is None:
            return "a map (YAML reads an unquoted {x} as a map)"
        return "a map"
    names = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def did_you_mean(word: str, valid: Iterable[str], more: str = "see kubectl explain") -> str:
    """`did you mean "labels"? Valid: ...`, listing the valid words when there are few."""
    valid = sorted(set(valid))
    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    close = close or [v for v in valid if v.lower() == word.lower()]
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return hint + (f"Valid: {', '.join(valid)}" if len(valid) <= 16 else more)


# --- metadata: names, labels, annotations ---------------------------------------------------


def qualified_name_problem(key: Any) -> str:
    """Why `key` is not a label/annotation key (`prefix/name`), or '' if it is one."""
    if not isinstance(key, str):
        return f"is {describe(key)}, not a string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and not (prefix and len(prefix) <= 253 and DNS_SUBDOMAIN.fullmatch(prefix)):
        return "has a prefix that is not a DNS subdomain (lower-case, digits, '-', '.')"
    if not (name and len(name) <= 63 and _LABEL_NAME.fullmatch(name)):
        return (
            "is not a valid key: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, after an optional DNS prefix and '/'"
        )
    return ""


def check_labels(problems: Problems, labels: Any, path: str, kind: str = "labels") -> None:
    """Keys are qualified names; label values at most 63 of [A-Za-z0-9-_.]; annotations text."""
    if labels is None:
        return
    if not isinstance(labels, Mapping):
        problems.add(path, f"{kind} must be a map of strings, not {describe(labels)}")
        return
    for key, value in labels.items():
        at = child_path(path, key)
        why = "" if PROBE in str(key) else qualified_name_problem(key)
        if why:
            problems.add(f"{path} key {quote(str(key))}", f"the {kind[:-1]} key {why}", "rename it")
        if not isinstance(value, str):
            problems.add(at, f"must be a string, not {describe(value)}", 'quote it, e.g. "1"')
        elif kind == "labels" and PROBE not in value and not is_label_value(value):
            problems.add(
                at,
                f"{quote(value)} is not a valid label value",
                "label values are at most 63 letters, digits, '-', '_' or '.', starting and "
                "ending with a letter or digit; put free text in an annotation",
            )
    if kind == "annotations" and len(json.dumps(labels)) > MAX_ANNOTATIONS_BYTES:
        problems.add(path, f"annotations exceed {MAX_ANNOTATIONS_BYTES} bytes", "shorten them")


@functools.cache
def definitions() -> dict[str, Any]:
    """The strict schemas' definitions (loaded once, about 1.6 MB of JSON)."""
    spec = importlib.util.find_spec("kubernetes_validate")  # its data only: no import needed
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kubernetes-validate is not installed (a dependency of this package)")
    root = Path(spec.submodule_search_locations[0], "kubernetes-json-schema")
    text = (root / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json").read_text()
    return json.loads(text)["$defs"]


@functools.cache
def _kinds() -> dict[tuple[str, str], str]:
    """(apiVersion, kind) -> definition name, for every kind the schemas know."""
    out = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            group, version = gvk["group"], gvk["version"]
            out[f"{group}/{version}" if group else version, gvk["kind"]] = name
    return out


def schema_for(api_version: str, kind: str) -> str | None:
    return _kinds().get((api_version, kind))


def builtin_group(api_version: str) -> bool:
    """True for Kubernetes' own API groups (no dot, or *.k8s.io): their kinds have schemas."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def check_objects(
    objects: Iterable[tuple[str, Manifest]], subject: str, schema: bool = True
) -> tuple[list[RenderError], list[str]]:
    """(problems, notes) for (item path, object) pairs; notes say what only the cluster checks.

    Without `schema`, only the cheap rules (metadata, pods, PVCs): for rendered objects whose
    template already passed the schemas.
    """
    problems = Problems(subject)
    notes: list[str] = []
    for path, manifest in objects:
        api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
        check_metadata(problems, manifest.get("metadata") or {}, path)
        if kind == "Pod":
            _check_pod_spec(problems, manifest.get("spec"), f"{path}.spec")
        elif kind == "PersistentVolumeClaim":
            _check_pvc_spec(problems, manifest.get("spec"), f"{path}.spec")
        name = schema_for(api_version, kind) if schema else ""
        if name is None:
            _unknown_kind(problems, notes, path, api_version, kind)
        elif name:
            body = {k: v for k, v in manifest.items() if k != "metadata"}
            _walk(problems, body, definitions()[name], path)
    return problems, notes


def _unknown_kind(problems: Problems, notes: list[str], path: str, api_version: str, kind: str):
    others = sorted(av for av, k in _kinds() if k == kind)
    if others:
        problems.add(
            f"{path}.apiVersion",
            f"{kind} is not served as {quote(api_version)}",
            f"use apiVersion: {others[-1]}"
            if len(others) == 1
            else f"use one of {', '.join(others)}",
        )
    elif builtin_group(api_version) and (known := {k for av, k in _kinds() if av == api_version}):
        # A group/version the schemas serve: a kind missing from it is a typo. Other *.k8s.io
        # groups (Gateway API, snapshots, metrics) are custom resources, judged in the cluster.
        problems.add(
            f"{path}.kind",
            f"Kubernetes {MINOR} has no kind {quote(kind)} in {quote(api_version)}",
            did_you_mean(kind, known, "see kubectl api-resources"),
        )
    else:
        notes.append(
            f"{subject_path(problems.subject, path)}: {kind} ({api_version}) has no schema "
            "offline (a custom resource?): it is checked only in the cluster"
        )


def subject_path(subject: str, path: str) -> str:
    return f"{subject} at {path}" if path else subject


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _walk(problems: Problems, value: Any, schema: Mapping, path: str) -> None:
    """Check one value against its schema, with the keywords Kubernetes' schemas use.

    (type, properties, additionalProperties, required, items, enum, $ref, and the oneOf of
    quantities and int-or-strings: a walk of our own, so that a message can list the valid
    fields, and cheap to import.) Iterative over maps and lists: depth costs no stack.
    """
    todo = [(value, schema, path)]
    while todo:
        value, schema, path = todo.pop()
        name = ""
        while "$ref" in schema:
            name = schema["$ref"].rpartition("/")[2]
            schema = definitions()[name]
        types = [t for sub in schema.get("oneOf", [schema]) for t in _as_list(sub.get("type", []))]
        if types and not any(_TYPES[t](value) for t in types):
            _type_problem(problems, value, [t for t in types if t != "null"], path)
            continue
        if "enum" in schema and value is not None and value not in schema["enum"]:
            valid = ", ".join(map(str, schema["enum"]))
            problems.add(path, f"{quote(value)} is not one of {valid}")
        if isinstance(value, Mapping):
            todo.extend(reversed(_walk_map(problems, value, schema, path)))
            _check_enums(problems, value, name, path)
        elif isinstance(value, list) and "items" in schema:
            todo.extend(
                reversed([(v, schema["items"], f"{path}[{i}]") for i, v in enumerate(value)])
            )


def _walk_map(problems: Problems, value: Mapping, schema: Mapping, path: str) -> list:
    props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
    for field in schema.get("required", ()):
        if field not in value:
            problems.add(
                child_path(path, field), f"the required field {quote(field)} is missing", "add it"
            )
    todo = []
    for key, sub in value.items():
        if key in props:
            todo.append((sub, props[key], child_path(path, key)))
        elif isinstance(extra, Mapping):
            todo.append((sub, extra, child_path(path, key)))
        elif extra is False and PROBE not in str(key):
            problems.add(
                child_path(path, key), f"unknown field {quote(key)}", did_you_mean(key, props)
            )
    return todo


# Values the apiserver checks that the schemas only describe in prose (the common ones).
_ENUMS = {
    "io.k8s.api.core.v1.PodSpec": {
        "restartPolicy": ("Always", "OnFailure", "Never"),
        "dnsPolicy": ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
    },
    "io.k8s.api.core.v1.Container": {"imagePullPolicy": ("Always", "IfNotPresent", "Never")},
    "io.k8s.api.core.v1.ContainerPort": {"protocol": ("TCP", "UDP", "SCTP")},
}


def _check_enums(problems: Problems, value: Mapping, definition: str, path: str) -> None:
    for field, valid in _ENUMS.get(definition, {}).items():
        given = value.get(field)
        if isinstance(given, str) and PROBE not in given and given not in valid:
            problems.add(
                child_path(path, field), f"{quote(given)} is not one of {', '.join(valid)}"
            )


def _type_problem(problems: Problems, value: Any, want: list[str], path: str) -> None:
    fix = ""
    if isinstance(value, Mapping) and len(value) == 1 and next(iter(value.values())) is None:
        fix = f"quote it: '{{{next(iter(value))}}}'"
    elif isinstance(value, str):
        fix = "write it without quotes"
        if PROBE in value:
            fix = "placeholders always render text: a number or boolean field cannot hold one"
    problems.add(path, f"must be {_kind_words(want)}, not {describe(value)}", fix)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value] if value else []


def _kind_words(types: list[str]) -> str:
    words = {"object": "a map", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false"}  # fmt: skip
    return " or ".join(dict.fromkeys(words.get(t, t) for t in types))


def check_metadata(problems: Problems, meta: Mapping, path: str) -> None:
    check_labels(problems, meta.get("labels"), f"{path}.labels")
    check_labels(problems, meta.get("annotations"), f"{path}.annotations", "annotations")


def _named(problems: Problems, entries: Any, path: str, what: str) -> set[str]:
    """Names of a list of named things (containers, volumes): DNS labels, unique."""
    names: set[str] = set()
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or PROBE in name:
            continue
        at = f"{path}[{index}].name"
        if not is_dns_label(name):
            problems.add(
                at,
                f"{what} name {quote(name)} is not a DNS label",
                "use lower-case letters, digits and '-'",
            )
        elif name in names:
            problems.add(at, f"two {what}s are named {quote(name)}", "rename one")
        names.add(name)
    return names


def _check_pod_spec(problems: Problems, spec: Any, path: str) -> None:
    """The apiserver's pod rules that schemas do not carry and templates often break."""
    if not isinstance(spec, Mapping):
        return
    if not spec.get("containers"):
        problems.add(f"{path}.containers", "a pod needs at least one container", "add one")
    volumes = _named(problems, spec.get("volumes"), f"{path}.volumes", "volume")
    for field in ("initContainers", "containers"):
        containers = spec.get(field) if isinstance(spec.get(field), list) else []
        _named(problems, containers, f"{path}.{field}", "container")
        for index, container in enumerate(containers):
            if isinstance(container, Mapping):
                _check_container(problems, container, f"{path}.{field}[{index}]", volumes)


def _check_container(problems: Problems, container: Mapping, path: str, volumes: set[str]) -> None:
    image = container.get("image")
    if image is None or (isinstance(image, str) and not image.strip()):
        problems.add(f"{path}.image", "a container needs an image", "set image")
    mounts = container.get("volumeMounts")
    for index, mount in enumerate(mounts if isinstance(mounts, list) else []):
        name = mount.get("name") if isinstance(mount, Mapping) else None
        if isinstance(name, str) and PROBE not in name and name not in volumes:
            problems.add(
                f"{path}.volumeMounts[{index}].name",
                f"no volume named {quote(name)} in the pod",
                did_you_mean(name, volumes) if volumes else "add it to spec.volumes",
            )
    resources_ = container.get("resources")
    if isinstance(resources_, Mapping):
        for field in ("limits", "requests"):
            _check_quantities(problems, resources_.get(field), f"{path}.resources.{field}")


def _check_pvc_spec(problems: Problems, spec: Any, path: str) -> None:
    if not isinstance(spec, Mapping):
        return
    if not spec.get("accessModes") and not spec.get("dataSource") and not spec.get("dataSourceRef"):
        problems.add(
            f"{path}.accessModes", "a PVC needs at least one access mode", "e.g. [ReadWriteOnce]"
        )
    requests = (
        (spec.get("resources") or {}).get("requests")
        if isinstance(spec.get("resources"), Mapping)
        else None
    )
    if not isinstance(requests, Mapping) or "storage" not in requests:
        problems.add(
            f"{path}.resources.requests.storage", "a PVC needs a storage request", "e.g. 1Gi"
        )
    _check_quantities(problems, requests, f"{path}.resources.requests")


def _check_quantities(problems: Problems, quantities: Any, path: str) -> None:
    if not isinstance(quantities, Mapping):
        return
    for key, value in quantities.items():
        text = (
            str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        )
        if isinstance(text, str) and PROBE not in text and not _QUANTITY.fullmatch(text):
            problems.add(
                child_path(path, key),
                f"{quote(text)} is not a quantity",
                "write a number with an optional suffix: 500m, 2, 1.5Gi, 512Mi, 1G",
            )
