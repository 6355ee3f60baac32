"""Find every mistake in a template or instance before anything is rendered or sent: pure, no I/O.

One layer for `render`, `validate` and the reconciler, in three steps, each collecting all the
problems it finds (as RenderErrors: subject, field path, message, what would be valid):

1. shape: known fields only (a typo gets "did you mean"), types, unique item names, conditions,
   resourceName patterns, label keys and values, for the template and for the instance;
2. schema: every item's object, with its placeholders standing in for their values, against the
   Kubernetes schemas shipped by `kubernetes-validate` (strict: unknown fields are errors), plus
   the rules the apiserver adds that template authors trip on (names, quantities, mounts);
3. rendered: the same rules on what variables turned the strings into (a label value `R&D`).

Kinds without a shipped schema (custom resources) are left to the apiserver, which in the cluster
is the truth anyway: the reconciler applies with strict field validation.
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
from jupyternetes_ssa.render import (
    CONDITION_OPERATORS,
    INSTANCE_KIND,
    ITEM_VAR_PREFIX,
    KINDS,
    TEMPLATE_KIND,
    child_path,
    expand,
    placeholders,
    render,
)
from jupyternetes_ssa.types import SECTIONS, Manifest, Rendered, Section

KUBERNETES_VERSION = "1.36.0"  # the schemas used: kubernetes-validate's for our minor
API_VERSION = "kadense.io/v1"
MAX_DEPTH = 64  # deeper than any real object; keeps every recursive walk bounded

TEMPLATE_SPEC_FIELDS = ("pods", "pvcs", "otherResources", "instanceNamespaces",
                        "instanceNamespaceSelector")  # fmt: skip
INSTANCE_SPEC_FIELDS = ("template", "variables", "purge", "sealedApiToken")
_COMMON = ("name", "resourceName", "labels", "annotations", "ownedByInstance", "condition",
           "adopt", "patches")  # fmt: skip
ITEM_FIELDS: dict[Section, tuple[str, ...]] = {
    "pods": (*_COMMON, "spec", "recreateOnChange", "updateStrategy"),
    "pvcs": (*_COMMON, "spec", "deletionPolicy"),
    "otherResources": (*_COMMON, "apiVersion", "kind", "deletionPolicy"),
}
_ONLY_ON = {
    "recreateOnChange": "pods",
    "updateStrategy": "pods",
    "deletionPolicy": "pvcs and otherResources (pods are always deleted once unwanted)",
}
UPDATE_STRATEGIES = ("OnRestart", "InPlace", "Recreate")
DELETION_POLICIES = ("Retain", "Delete")

# What a placeholder becomes when no instance is given: strings holding it are not judged.
PROBE = "\x00"
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?")
_NAME_LITERAL = re.compile(r"[a-z0-9-]*")
MAX_ANNOTATIONS_BYTES = 256 * 1024


class _Problems(list[RenderError]):
    """The problems of one object, all under one subject."""

    def __init__(self, subject: str):
        super().__init__()
        self.subject = subject

    def add(self, path: str, message: str, fix: str = "") -> None:
        self.append(RenderError(message, subject=self.subject, path=path, fix=fix))


def _q(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _type(value: Any) -> str:
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


def _unknown_fields(
    problems: _Problems, doc: Mapping, path: str, valid: Iterable[str], what: str = "field"
) -> None:
    valid = tuple(valid)
    for key in doc:
        if key not in valid:
            problems.add(
                child_path(path, key), f"unknown {what} {_q(key)}", did_you_mean(key, valid)
            )


def depth_ok(node: Any) -> bool:
    """True if no map or list is nested deeper than MAX_DEPTH (checked without recursion)."""
    todo = [(node, 0)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(value, Mapping):
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)
    return True


# --- metadata: names, labels, annotations ---------------------------------------------------


def qualified_name_problem(key: Any) -> str:
    """Why `key` is not a label/annotation key (`prefix/name`), or '' if it is one."""
    if not isinstance(key, str):
        return f"is {_type(key)}, not a string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and not (prefix and len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "has a prefix that is not a DNS subdomain (lower-case, digits, '-', '.')"
    if not (name and len(name) <= 63 and _LABEL_NAME.fullmatch(name)):
        return (
            "is not a valid key: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, after an optional DNS prefix and '/'"
        )
    return ""


def check_labels(problems: _Problems, labels: Any, path: str, kind: str = "labels") -> None:
    """Keys are qualified names; label values at most 63 of [A-Za-z0-9-_.]; annotations text."""
    if labels is None:
        return
    if not isinstance(labels, Mapping):
        problems.add(path, f"{kind} must be a map of strings, not {_type(labels)}")
        return
    for key, value in labels.items():
        at = child_path(path, key)
        why = "" if PROBE in str(key) else qualified_name_problem(key)
        if why:
            problems.add(f"{path} key {_q(str(key))}", f"the {kind[:-1]} key {why}", "rename it")
        if not isinstance(value, str):
            problems.add(at, f"must be a string, not {_type(value)}", 'quote it, e.g. "1"')
        elif kind == "labels" and PROBE not in value and not is_label_value(value):
            problems.add(
                at,
                f"{_q(value)} is not a valid label value",
                "label values are at most 63 letters, digits, '-', '_' or '.', starting and "
                "ending with a letter or digit; put free text in an annotation",
            )
    if kind == "annotations" and len(json.dumps(labels)) > MAX_ANNOTATIONS_BYTES:
        problems.add(path, f"annotations exceed {MAX_ANNOTATIONS_BYTES} bytes", "shorten them")


# --- the template's shape --------------------------------------------------------------------


def template_subject(template: Manifest, origin: str = "") -> str:
    meta = template.get("metadata") if isinstance(template.get("metadata"), Mapping) else {}
    ref = "/".join(str(meta[k]) for k in ("namespace", "name") if meta.get(k))
    subject = f"{TEMPLATE_KIND} {ref or '?'}"
    return f"{origin}: {subject}" if origin else subject


def check_template(template: Manifest, subject: str) -> list[RenderError]:
    """The template's own shape: everything the reconciler relies on, every typo."""
    problems = _Problems(subject)
    if not depth_ok(template):
        problems.add("", f"nested deeper than {MAX_DEPTH} levels", "flatten it")
        return problems
    _check_header(problems, template, TEMPLATE_KIND, namespaced=False)
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        problems.add("spec", f"must be a map with pods and pvcs, not {_type(spec)}")
        return problems
    _unknown_fields(problems, spec, "spec", (*TEMPLATE_SPEC_FIELDS, "condition"))
    if spec.get("condition"):
        problems.add(
            "spec.condition",
            "a template-level condition is not used (the field is kept for the original's CRD)",
            "put the condition on each item instead",
        )
    _check_instance_namespaces(problems, spec)
    count = 0
    for section in SECTIONS:
        entries = spec.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.add(f"spec.{section}", f"must be a list of items, not {_type(entries)}")
            continue
        count += len(entries)
        _check_section(problems, section, entries)
    if not count and not problems:
        problems.add("spec", "the template has no items", "add a pods item (and pvcs if needed)")
    return problems


def _check_header(problems: _Problems, doc: Manifest, kind: str, namespaced: bool) -> None:
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        problems.add("apiVersion", f"must be {API_VERSION}, not {_q(doc.get('apiVersion'))}")
    if doc.get("kind", kind) != kind:
        problems.add("kind", f"must be {kind}, not {_q(doc.get('kind'))}")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        problems.add("metadata", f"must be a map with name, not {_type(meta)}", "add metadata.name")
        return
    name = meta.get("name")
    if not (isinstance(name, str) and len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name)):
        problems.add(
            "metadata.name",
            f"{_q(name)} is not a valid name",
            "use lower-case letters, digits, '-' and '.' (at most 253)",
        )
    namespace = meta.get("namespace")
    if (namespaced or namespace is not None) and not is_dns_label(namespace):
        problems.add(
            "metadata.namespace",
            f"{_q(namespace)} is not a namespace name",
            "use lower-case letters, digits and '-' (at most 63)",
        )


def _check_instance_namespaces(problems: _Problems, spec: Mapping) -> None:
    """Types only: the semantics belong to the namespace policy."""
    names = spec.get("instanceNamespaces")
    if names is not None and not (isinstance(names, list) and all(map(is_dns_label, names))):
        problems.add("spec.instanceNamespaces", "must be a list of namespace names")
    selector = spec.get("instanceNamespaceSelector")
    if selector is None:
        return
    if not isinstance(selector, Mapping):
        problems.add("spec.instanceNamespaceSelector", "must be a label selector map")
        return
    path = "spec.instanceNamespaceSelector"
    _unknown_fields(problems, selector, path, ("matchLabels", "matchExpressions"))
    check_labels(problems, selector.get("matchLabels"), f"{path}.matchLabels")
    if not isinstance(selector.get("matchExpressions") or [], list):
        problems.add(f"{path}.matchExpressions", "must be a list")


def _check_section(problems: _Problems, section: Section, entries: list) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(entries):
        path = f"spec.{section}[{index}]"
        if not isinstance(item, Mapping):
            problems.add(path, f"a template item must be a map, not {_type(item)}")
            continue
        name = item.get("name")
        if not is_dns_label(name):
            problems.add(
                f"{path}.name",
                f"item name {_q(name)} is not a DNS label",
                "use lower-case letters, digits and '-' (at most 63)",
            )
        elif name in seen:
            problems.add(
                f"{path}.name",
                f"two {section} items are named {_q(name)} (also spec.{section}[{seen[name]}])",
                "rename one",
            )
        else:
            seen[name] = index
            path = f"{section}[{name}]"
        _check_item(problems, section, item, path)


def _check_item(problems: _Problems, section: Section, item: Mapping, path: str) -> None:
    allowed = ITEM_FIELDS[section]
    if section == "otherResources":
        _check_other_header(problems, item, path)
        allowed = (*allowed, *_object_fields(item))
    for key in item:
        if key in allowed or (section == "otherResources" and key in ("metadata", "status")):
            continue
        if key in _ONLY_ON:
            problems.add(
                child_path(path, key), f"{key} applies only to {_ONLY_ON[key]}", "remove it"
            )
        elif section != "otherResources" or _object_fields(item):
            problems.add(
                child_path(path, key), f"unknown item field {_q(key)}", did_you_mean(key, allowed)
            )
    if section != "otherResources" and not isinstance(item.get("spec"), Mapping):
        problems.add(
            f"{path}.spec", f"must be the object's spec map, not {_type(item.get('spec'))}"
        )
    check_labels(problems, _probe(item.get("labels")), f"{path}.labels")
    check_labels(problems, _probe(item.get("annotations")), f"{path}.annotations", "annotations")
    for field in ("ownedByInstance", "recreateOnChange", "adopt"):
        if not isinstance(item.get(field, False), bool):
            problems.add(f"{path}.{field}", f"must be true or false, not {_type(item[field])}")
    for field, valid in (
        ("deletionPolicy", DELETION_POLICIES),
        ("updateStrategy", UPDATE_STRATEGIES),
    ):
        if field in item and item[field] not in valid:
            problems.add(f"{path}.{field}", f"{_q(item[field])} is not one of {', '.join(valid)}")
    if item.get("condition") is not None:
        check_condition(problems, item["condition"], f"{path}.condition")
    _check_patches(problems, item.get("patches"), f"{path}.patches")
    _check_resource_name(problems, item, path)


def _check_other_header(problems: _Problems, item: Mapping, path: str) -> None:
    for field in ("apiVersion", "kind"):
        if not isinstance(item.get(field), str) or not item.get(field):
            problems.add(
                f"{path}.{field}",
                f"an otherResources item needs {field}",
                "e.g. apiVersion: v1, kind: ConfigMap",
            )
    for field in ("metadata", "status"):
        if field in item:
            problems.add(
                f"{path}.{field}",
                f"{field} cannot be set on a template item",
                "use the item's name/resourceName, labels and annotations",
            )


def _object_fields(item: Mapping) -> tuple[str, ...]:
    """Top-level fields of an otherResources kind (spec, data, rules...); () if unknown kind."""
    found = schema_for(str(item.get("apiVersion")), str(item.get("kind")))
    if found is None:
        return ()
    props = definitions()[found].get("properties", {})
    return tuple(k for k in props if k not in ("apiVersion", "kind", "metadata", "status"))


def check_condition(problems: _Problems, condition: Any, path: str) -> None:
    """The small rule language: `variable`, then any of the operators."""
    example = "e.g. condition: {variable: profile, equals: gpu}"
    if not isinstance(condition, Mapping) or not isinstance(condition.get("variable"), str):
        problems.add(
            path, "a condition needs `variable`, the name of the variable it tests", example
        )
        return
    _unknown_fields(problems, condition, path, ("variable", *CONDITION_OPERATORS), "operator")
    if not any(op in condition for op in CONDITION_OPERATORS):
        problems.add(
            path, "a condition needs an operator", f"add one of {', '.join(CONDITION_OPERATORS)}"
        )
    for op in ("in", "notIn"):
        value = condition.get(op, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            problems.add(
                f"{path}.{op}", f"must be a list of strings, not {_type(value)}", "quote the values"
            )
    for op in ("equals", "notEquals"):
        if op in condition and not isinstance(condition[op], str):
            problems.add(
                f"{path}.{op}", f"must be a string, not {_type(condition[op])}", "quote the value"
            )
    if not isinstance(condition.get("present", True), bool):
        problems.add(f"{path}.present", "must be true or false")


def _check_patches(problems: _Problems, patches: Any, path: str) -> None:
    """Types only: what a merge may change is the patch logic's to check."""
    if patches is None:
        return
    if not isinstance(patches, list):
        problems.add(path, f"must be a list of {{condition, merge}}, not {_type(patches)}")
        return
    for index, patch in enumerate(patches):
        at = f"{path}[{index}]"
        if not isinstance(patch, Mapping):
            problems.add(at, f"must be a map {{condition, merge}}, not {_type(patch)}")
            continue
        _unknown_fields(problems, patch, at, ("condition", "merge"))
        if patch.get("condition") is not None:
            check_condition(problems, patch["condition"], f"{at}.condition")
        if not isinstance(patch.get("merge"), Mapping):
            problems.add(f"{at}.merge", "must be a map: the part of the item to merge in")


def _check_resource_name(problems: _Problems, item: Mapping, path: str) -> None:
    """A pattern that renders a valid name as it is (not one hashed into validity)."""
    if "resourceName" not in item:
        return
    pattern, path = item["resourceName"], f"{path}.resourceName"
    if not isinstance(pattern, str) or not pattern:
        problems.add(path, f"must be a non-empty string, not {_type(pattern)}")
        return
    try:
        literal = expand(pattern, _ProbeVariables(), path)
    except RenderError as err:
        problems.add(path, err.message, err.fix)
        return
    for name in placeholders(pattern):
        if name.startswith(tuple(ITEM_VAR_PREFIX.values())):
            problems.add(
                path,
                f'resourceName may not use "{name}": object names are not known yet',
                "use the instance's variables or jupyternetes.instance.*/template.* only",
            )
    if not _NAME_LITERAL.fullmatch(literal.replace(PROBE, "")):
        problems.add(
            path,
            f"the text {_q(pattern)} outside placeholders is not lower-case letters, digits "
            "and '-', so every name would be changed into a hashed one",
            "write the fixed parts in lower case, with '-' between words",
        )


class _ProbeVariables(Mapping[str, str]):
    """Every variable exists and renders as PROBE: lets a template be checked alone."""

    def __getitem__(self, key: str) -> str:
        return PROBE

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def _probe(node: Any) -> Any:
    """The tree with every placeholder replaced by PROBE (brace errors are the render's)."""
    if isinstance(node, str):
        try:
            return expand(node, _ProbeVariables())
        except RenderError:
            return PROBE
    if isinstance(node, Mapping):
        return {_probe(k) if isinstance(k, str) else k: _probe(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_probe(v) for v in node]
    return node


# --- the instance's shape --------------------------------------------------------------------


def instance_subject(instance: Manifest, origin: str = "") -> str:
    meta = instance.get("metadata") if isinstance(instance.get("metadata"), Mapping) else {}
    ref = "/".join(str(meta.get(k) or "?") for k in ("namespace", "name"))
    return f"{origin}: {INSTANCE_KIND} {ref}" if origin else f"{INSTANCE_KIND} {ref}"


def check_instance(instance: Manifest, subject: str) -> list[RenderError]:
    """spec.template, spec.variables (strings), purge, sealedApiToken: what render relies on."""
    problems = _Problems(subject)
    if not depth_ok(instance):
        problems.add("", f"nested deeper than {MAX_DEPTH} levels", "flatten it")
        return problems
    _check_header(problems, instance, INSTANCE_KIND, namespaced=True)
    spec = instance.get("spec")
    if not isinstance(spec, Mapping):
        problems.add("spec", f"must be a map with template and variables, not {_type(spec)}")
        return problems
    _unknown_fields(problems, spec, "spec", INSTANCE_SPEC_FIELDS)
    ref = spec.get("template")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
        problems.add("spec.template.name", "the instance must name its template", "set it")
    else:
        _unknown_fields(problems, ref, "spec.template", ("name", "namespace"))
        if ref.get("namespace") not in (None, "") and not is_dns_label(ref["namespace"]):
            problems.add(
                "spec.template.namespace", f"{_q(ref['namespace'])} is not a namespace name"
            )
    variables = spec.get("variables")
    if variables is not None and not isinstance(variables, Mapping):
        problems.add("spec.variables", f"must be a map of strings, not {_type(variables)}")
    for key, value in (variables or {}).items() if isinstance(variables, Mapping) else ():
        if not isinstance(value, str):
            problems.add(
                child_path("spec.variables", key),
                f"variable values must be strings, not {_type(value)}",
                "quote it",
            )
    if not isinstance(spec.get("purge", False), bool):
        problems.add("spec.purge", f"must be true or false, not {_type(spec['purge'])}")
    sealed = spec.get("sealedApiToken")
    if sealed is not None:
        if not isinstance(sealed, Mapping):
            problems.add("spec.sealedApiToken", "must be a map {keyId, ciphertext}")
        else:
            _unknown_fields(problems, sealed, "spec.sealedApiToken", ("keyId", "ciphertext"))
            for field in ("keyId", "ciphertext"):
                if not isinstance(sealed.get(field), str):
                    problems.add(f"spec.sealedApiToken.{field}", "must be a string")
    return problems


# --- the objects against the Kubernetes schemas ----------------------------------------------


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
    objects: Iterable[tuple[str, Manifest]], subject: str
) -> tuple[list[RenderError], list[str]]:
    """(problems, notes) for (item path, object) pairs; notes say what only the cluster checks."""
    problems = _Problems(subject)
    notes: list[str] = []
    for path, manifest in objects:
        api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
        name = schema_for(api_version, kind)
        if name is None:
            _unknown_kind(problems, notes, path, api_version, kind)
            continue
        body = {k: v for k, v in manifest.items() if k != "metadata"}
        _walk(problems, body, definitions()[name], path)
        _check_metadata(problems, manifest.get("metadata") or {}, path)
        if kind == "Pod":
            _check_pod_spec(problems, manifest.get("spec"), f"{path}.spec")
        elif kind == "PersistentVolumeClaim":
            _check_pvc_spec(problems, manifest.get("spec"), f"{path}.spec")
    return problems, notes


def _unknown_kind(problems: _Problems, notes: list[str], path: str, api_version: str, kind: str):
    others = sorted(av for av, k in _kinds() if k == kind)
    if others:
        problems.add(
            f"{path}.apiVersion",
            f"{kind} is not served as {_q(api_version)}",
            f"use apiVersion: {others[-1]}"
            if len(others) == 1
            else f"use one of {', '.join(others)}",
        )
    elif builtin_group(api_version):
        known = {k for av, k in _kinds() if av == api_version}
        problems.add(
            f"{path}.kind",
            f"Kubernetes {KUBERNETES_VERSION[:4]} has no kind {_q(kind)} in {_q(api_version)}",
            did_you_mean(kind, known, "see kubectl api-resources") if known else "check apiVersion",
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


def _walk(problems: _Problems, value: Any, schema: Mapping, path: str) -> None:
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
            problems.add(path, f"{_q(value)} is not one of {valid}")
        if isinstance(value, Mapping):
            todo.extend(reversed(_walk_map(problems, value, schema, path)))
            _check_enums(problems, value, name, path)
        elif isinstance(value, list) and "items" in schema:
            todo.extend(
                reversed([(v, schema["items"], f"{path}[{i}]") for i, v in enumerate(value)])
            )


def _walk_map(problems: _Problems, value: Mapping, schema: Mapping, path: str) -> list:
    props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
    for field in schema.get("required", ()):
        if field not in value:
            problems.add(
                child_path(path, field), f"the required field {_q(field)} is missing", "add it"
            )
    todo = []
    for key, sub in value.items():
        if key in props:
            todo.append((sub, props[key], child_path(path, key)))
        elif isinstance(extra, Mapping):
            todo.append((sub, extra, child_path(path, key)))
        elif extra is False and PROBE not in str(key):
            problems.add(
                child_path(path, key), f"unknown field {_q(key)}", did_you_mean(key, props)
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


def _check_enums(problems: _Problems, value: Mapping, definition: str, path: str) -> None:
    for field, valid in _ENUMS.get(definition, {}).items():
        given = value.get(field)
        if isinstance(given, str) and PROBE not in given and given not in valid:
            problems.add(child_path(path, field), f"{_q(given)} is not one of {', '.join(valid)}")


def _type_problem(problems: _Problems, value: Any, want: list[str], path: str) -> None:
    fix = ""
    if isinstance(value, Mapping) and len(value) == 1 and next(iter(value.values())) is None:
        fix = f"quote it: '{{{next(iter(value))}}}'"
    elif isinstance(value, str):
        fix = "write it without quotes"
        if PROBE in value:
            fix = "placeholders always render text: a number or boolean field cannot hold one"
    problems.add(path, f"must be {_kind_words(want)}, not {_type(value)}", fix)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value] if value else []


def _kind_words(types: list[str]) -> str:
    words = {"object": "a map", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false"}  # fmt: skip
    return " or ".join(dict.fromkeys(words.get(t, t) for t in types))


def _check_metadata(problems: _Problems, meta: Mapping, path: str) -> None:
    check_labels(problems, meta.get("labels"), f"{path}.labels")
    check_labels(problems, meta.get("annotations"), f"{path}.annotations", "annotations")


def _named(problems: _Problems, entries: Any, path: str, what: str) -> set[str]:
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
                f"{what} name {_q(name)} is not a DNS label",
                "use lower-case letters, digits and '-'",
            )
        elif name in names:
            problems.add(at, f"two {what}s are named {_q(name)}", "rename one")
        names.add(name)
    return names


def _check_pod_spec(problems: _Problems, spec: Any, path: str) -> None:
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


def _check_container(problems: _Problems, container: Mapping, path: str, volumes: set[str]) -> None:
    image = container.get("image")
    if image is None or (isinstance(image, str) and not image.strip()):
        problems.add(f"{path}.image", "a container needs an image", "set image")
    mounts = container.get("volumeMounts")
    for index, mount in enumerate(mounts if isinstance(mounts, list) else []):
        name = mount.get("name") if isinstance(mount, Mapping) else None
        if isinstance(name, str) and PROBE not in name and name not in volumes:
            problems.add(
                f"{path}.volumeMounts[{index}].name",
                f"no volume named {_q(name)} in the pod",
                did_you_mean(name, volumes) if volumes else "add it to spec.volumes",
            )
    resources_ = container.get("resources")
    if isinstance(resources_, Mapping):
        for field in ("limits", "requests"):
            _check_quantities(problems, resources_.get(field), f"{path}.resources.{field}")


def _check_pvc_spec(problems: _Problems, spec: Any, path: str) -> None:
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


def _check_quantities(problems: _Problems, quantities: Any, path: str) -> None:
    if not isinstance(quantities, Mapping):
        return
    for key, value in quantities.items():
        text = (
            str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        )
        if isinstance(text, str) and PROBE not in text and not _QUANTITY.fullmatch(text):
            problems.add(
                child_path(path, key),
                f"{_q(text)} is not a quantity",
                "write a number with an optional suffix: 500m, 2, 1.5Gi, 512Mi, 1G",
            )


# --- whole templates and instances -----------------------------------------------------------


def template_objects(template: Manifest) -> list[tuple[str, Manifest]]:
    """Every item's object with placeholders as PROBE, for the schema check without an instance."""
    spec = template.get("spec") if isinstance(template.get("spec"), Mapping) else {}
    out = []
    for section in SECTIONS:
        entries = spec.get(section) if isinstance(spec.get(section), list) else []
        for item in entries:
            if isinstance(item, Mapping) and is_dns_label(item.get("name")):
                out.append((f"{section}[{item['name']}]", _probe_object(section, item)))
    return out


def _probe_object(section: Section, item: Mapping) -> Manifest:
    if section == "otherResources":
        api_version, kind = item.get("apiVersion"), item.get("kind")
        body = {k: v for k, v in item.items() if k not in ITEM_FIELDS[section]}
    else:
        api_version, kind, body = "v1", KINDS[section], {"spec": item.get("spec")}
    meta = {"name": "probe", "namespace": "probe"}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **_probe(body)}


def rendered_objects(rendered: Rendered) -> list[tuple[str, Manifest]]:
    return [(f"{i.section}[{i.item}]", i.manifest) for i in rendered.items]


def template_problems(template: Manifest, subject: str) -> tuple[list[RenderError], list[str]]:
    """Shape, then (if the shape holds) every item against its schema."""
    problems = check_template(template, subject)
    found, notes = check_objects(template_objects(template), subject)
    shape = [p.path for p in problems]
    found = [f for f in found if not any(f.path.startswith(path) for path in shape)]
    return [*problems, *found], notes


def dedupe(problems: Iterable[RenderError]) -> list[RenderError]:
    """One of each (path, message): the probe and the rendered check may both see a problem."""
    seen: set[tuple[str, str]] = set()
    out = []
    for problem in problems:
        if (problem.path, problem.message) not in seen:
            seen.add((problem.path, problem.message))
            out.append(problem)
    return out


_TEMPLATE_CACHE: dict[tuple[str, str, str], tuple[list[RenderError], list[str]]] = {}
_CACHE_SIZE = 256


def _cached_template_problems(
    template: Manifest, subject: str
) -> tuple[list[RenderError], list[str]]:
    """A template from the cluster is checked once per resourceVersion, not once per instance."""
    meta = template.get("metadata") if isinstance(template.get("metadata"), Mapping) else {}
    version = meta.get("resourceVersion")
    if not isinstance(version, str):
        return template_problems(template, subject)
    key = (str(meta.get("namespace")), str(meta.get("name")), version)
    if key not in _TEMPLATE_CACHE:
        if len(_TEMPLATE_CACHE) >= _CACHE_SIZE:
            _TEMPLATE_CACHE.pop(next(iter(_TEMPLATE_CACHE)))
        _TEMPLATE_CACHE[key] = template_problems(template, subject)
    return _TEMPLATE_CACHE[key]


def check_pair(
    template: Manifest,
    instance: Manifest,
    *,
    template_origin: str = "",
    instance_origin: str = "",
    schema_on_rendered: bool = True,
) -> tuple[Rendered | None, list[RenderError], list[str]]:
    """(rendered or None, problems, notes) for an instance and its template: everything above."""
    problems, notes = _cached_template_problems(
        template, template_subject(template, template_origin)
    )
    subject = instance_subject(instance, instance_origin)
    problems = [*problems, *check_instance(instance, subject)]
    if problems:
        return None, problems, notes
    try:
        rendered = render(template, instance)
    except RenderError as err:
        return None, [RenderError(err.message, subject=subject, path=err.path, fix=err.fix)], notes
    objects = rendered_objects(rendered)
    if schema_on_rendered:
        found, _ = check_objects(objects, subject)
    else:
        found = _Problems(subject)
        for path, manifest in objects:
            _check_metadata(found, manifest.get("metadata") or {}, path)
    return (None if found else rendered), dedupe(found), notes


def validated_render(template: Manifest, instance: Manifest) -> Rendered:
    """render() for the reconciler: raise the first problem (saying how many more there are)."""
    rendered, problems, _ = check_pair(template, instance, schema_on_rendered=False)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise RenderError(
            first.message + more, subject=first.subject, path=first.path, fix=first.fix
        )
    assert rendered is not None
    return rendered
