"""Find every mistake in a template or instance before anything is rendered or sent: pure, no I/O.

One layer for `render`, `validate` and the reconciler, in three steps, each collecting all the
problems it finds (as RenderErrors: subject, field path, message, what would be valid):

1. shape (here): known fields only (a typo gets "did you mean"), types, unique item names,
   conditions, resourceName patterns, label keys and values, for the template and the instance;
2. schema (schema.py): every item's object, with its placeholders standing in for their values,
   against the Kubernetes schemas (strict: unknown fields are errors) and the apiserver's rules;
3. rendered: the same rules on what variables turned the strings into (a label value `R&D`).

Kinds without a shipped schema (custom resources) are left to the apiserver, which in the cluster
is the truth anyway: the reconciler applies with strict field validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from jupyternetes_ssa import patches
from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.names import is_dns_label
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
from jupyternetes_ssa.schema import (
    DNS_SUBDOMAIN,
    PROBE,
    Problems,
    check_labels,
    check_objects,
    definitions,
    describe,
    did_you_mean,
    quote,
    schema_for,
)
from jupyternetes_ssa.types import SECTIONS, Manifest, Rendered, Section

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

_NAME_LITERAL = re.compile(r"[a-z0-9-]*")


def _unknown_fields(
    problems: Problems, doc: Mapping, path: str, valid: Iterable[str], what: str = "field"
) -> None:
    valid = tuple(valid)
    for key in doc:
        if key not in valid:
            problems.add(
                child_path(path, key), f"unknown {what} {quote(key)}", did_you_mean(key, valid)
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


# --- the template's shape --------------------------------------------------------------------


def template_subject(template: Manifest, origin: str = "") -> str:
    meta = template.get("metadata") if isinstance(template.get("metadata"), Mapping) else {}
    ref = "/".join(str(meta[k]) for k in ("namespace", "name") if meta.get(k))
    subject = f"{TEMPLATE_KIND} {ref or '?'}"
    return f"{origin}: {subject}" if origin else subject


def _opening(obj: Manifest, subject: str, kind: str, holds: str) -> tuple[Problems, Mapping | None]:
    """What a template and an instance share: a sane depth, the header, a spec map (None:
    there is no spec to look into)."""
    problems = Problems(subject)
    if not depth_ok(obj):
        problems.add("", f"nested deeper than {MAX_DEPTH} levels", "flatten it")
        return problems, None
    _check_header(problems, obj, kind, namespaced=kind == INSTANCE_KIND)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        problems.add("spec", f"must be a map with {holds}, not {describe(spec)}")
        return problems, None
    return problems, spec


def check_template(template: Manifest, subject: str) -> list[RenderError]:
    """The template's own shape: everything the reconciler relies on, every typo."""
    problems, spec = _opening(template, subject, TEMPLATE_KIND, "pods and pvcs")
    if spec is None:
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
            problems.add(f"spec.{section}", f"must be a list of items, not {describe(entries)}")
            continue
        count += len(entries)
        _check_section(problems, section, entries)
    if not count and not problems:
        problems.add("spec", "the template has no items", "add a pods item (and pvcs if needed)")
    return problems


def _check_header(problems: Problems, doc: Manifest, kind: str, namespaced: bool) -> None:
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        problems.add("apiVersion", f"must be {API_VERSION}, not {quote(doc.get('apiVersion'))}")
    if doc.get("kind", kind) != kind:
        problems.add("kind", f"must be {kind}, not {quote(doc.get('kind'))}")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        problems.add(
            "metadata", f"must be a map with name, not {describe(meta)}", "add metadata.name"
        )
        return
    name = meta.get("name")
    if not (isinstance(name, str) and len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name)):
        problems.add(
            "metadata.name",
            f"{quote(name)} is not a valid name",
            "use lower-case letters, digits, '-' and '.' (at most 253)",
        )
    namespace = meta.get("namespace")
    if (namespaced or namespace is not None) and not is_dns_label(namespace):
        problems.add(
            "metadata.namespace",
            f"{quote(namespace)} is not a namespace name",
            "use lower-case letters, digits and '-' (at most 63)",
        )


def _check_instance_namespaces(problems: Problems, spec: Mapping) -> None:
    """Types only: the semantics belong to the namespace policy."""
    names = spec.get("instanceNamespaces")
    if names is not None and not (
        isinstance(names, list) and all(n == "*" or is_dns_label(n) for n in names)
    ):
        problems.add(
            "spec.instanceNamespaces", 'must be a list of namespace names, or ["*"] for every one'
        )
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


def _check_section(problems: Problems, section: Section, entries: list) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(entries):
        path = f"spec.{section}[{index}]"
        if not isinstance(item, Mapping):
            problems.add(path, f"a template item must be a map, not {describe(item)}")
            continue
        name = item.get("name")
        if not is_dns_label(name):
            problems.add(
                f"{path}.name",
                f"item name {quote(name)} is not a DNS label",
                "use lower-case letters, digits and '-' (at most 63)",
            )
        elif name in seen:
            problems.add(
                f"{path}.name",
                f"two {section} items are named {quote(name)} (also spec.{section}[{seen[name]}])",
                "rename one",
            )
        else:
            seen[name] = index
            path = f"{section}[{name}]"
        _check_item(problems, section, item, path)


def _check_item(problems: Problems, section: Section, item: Mapping, path: str) -> None:
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
                child_path(path, key),
                f"unknown item field {quote(key)}",
                did_you_mean(key, allowed),
            )
    if section != "otherResources" and not isinstance(item.get("spec"), Mapping):
        problems.add(
            f"{path}.spec", f"must be the object's spec map, not {describe(item.get('spec'))}"
        )
    for field in ("labels", "annotations", *_body(section, item)):
        _probe(item.get(field), problems, child_path(path, field))  # for the brace errors
    check_labels(problems, _probe(item.get("labels")), f"{path}.labels")
    check_labels(problems, _probe(item.get("annotations")), f"{path}.annotations", "annotations")
    for field in ("ownedByInstance", "recreateOnChange", "adopt"):
        if not isinstance(item.get(field, False), bool):
            problems.add(f"{path}.{field}", f"must be true or false, not {describe(item[field])}")
    for field, valid in (
        ("deletionPolicy", DELETION_POLICIES),
        ("updateStrategy", UPDATE_STRATEGIES),
    ):
        if field in item and item[field] not in valid:
            problems.add(
                f"{path}.{field}", f"{quote(item[field])} is not one of {', '.join(valid)}"
            )
    if item.get("condition") is not None:
        check_condition(problems, item["condition"], f"{path}.condition")
    _check_patches(problems, item.get("patches"), f"{path}.patches")
    _check_resource_name(problems, item, path)


def _check_other_header(problems: Problems, item: Mapping, path: str) -> None:
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


def check_condition(problems: Problems, condition: Any, path: str) -> None:
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
                f"{path}.{op}",
                f"must be a list of strings, not {describe(value)}",
                "quote the values",
            )
    for op in ("equals", "notEquals"):
        if op in condition and not isinstance(condition[op], str):
            problems.add(
                f"{path}.{op}",
                f"must be a string, not {describe(condition[op])}",
                "quote the value",
            )
    if not isinstance(condition.get("present", True), bool):
        problems.add(f"{path}.present", "must be true or false")


def _check_patches(problems: Problems, patches: Any, path: str) -> None:
    """Types only: what a merge may change is the patch logic's to check."""
    if patches is None:
        return
    if not isinstance(patches, list):
        problems.add(path, f"must be a list of {{condition, merge}}, not {describe(patches)}")
        return
    for index, patch in enumerate(patches):
        at = f"{path}[{index}]"
        if not isinstance(patch, Mapping):
            problems.add(at, f"must be a map {{condition, merge}}, not {describe(patch)}")
            continue
        _unknown_fields(problems, patch, at, ("condition", "merge"))
        if patch.get("condition") is not None:
            check_condition(problems, patch["condition"], f"{at}.condition")
        if not isinstance(patch.get("merge"), Mapping):
            problems.add(f"{at}.merge", "must be a map: the part of the item to merge in")


def _check_resource_name(problems: Problems, item: Mapping, path: str) -> None:
    """A pattern that renders a valid name as it is (not one hashed into validity)."""
    if "resourceName" not in item:
        return
    pattern, path = item["resourceName"], f"{path}.resourceName"
    if not isinstance(pattern, str) or not pattern:
        problems.add(path, f"must be a non-empty string, not {describe(pattern)}")
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
            f"the text {quote(pattern)} outside placeholders is not lower-case letters, digits "
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


def _probe(node: Any, problems: Problems | None = None, path: str = "") -> Any:
    """The tree with every placeholder replaced by PROBE; brace errors go to `problems`."""
    if isinstance(node, str):
        if PROBE in node and problems is not None:  # it would pass for a placeholder's value
            problems.add(path, "holds a NUL character (\\x00)", "remove it")
        try:
            return expand(node, _ProbeVariables(), path)
        except RenderError as err:
            if problems is not None:
                problems.add(path, err.message, err.fix)
            return PROBE
    if isinstance(node, Mapping):
        return {
            _probe(k, problems, f"{path} key {quote(k)}") if isinstance(k, str) else k: _probe(
                v, problems, child_path(path, k)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_probe(v, problems, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


# --- the instance's shape --------------------------------------------------------------------


def instance_subject(instance: Manifest, origin: str = "") -> str:
    meta = instance.get("metadata") if isinstance(instance.get("metadata"), Mapping) else {}
    ref = "/".join(str(meta.get(k) or "?") for k in ("namespace", "name"))
    return f"{origin}: {INSTANCE_KIND} {ref}" if origin else f"{INSTANCE_KIND} {ref}"


def check_instance(instance: Manifest, subject: str) -> list[RenderError]:
    """spec.template, spec.variables (strings), purge, sealedApiToken: what render relies on."""
    problems, spec = _opening(instance, subject, INSTANCE_KIND, "template and variables")
    if spec is None:
        return problems
    _unknown_fields(problems, spec, "spec", INSTANCE_SPEC_FIELDS)
    ref = spec.get("template")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
        problems.add("spec.template.name", "the instance must name its template", "set it")
    else:
        _unknown_fields(problems, ref, "spec.template", ("name", "namespace"))
        if ref.get("namespace") not in (None, "") and not is_dns_label(ref["namespace"]):
            problems.add(
                "spec.template.namespace", f"{quote(ref['namespace'])} is not a namespace name"
            )
    variables = spec.get("variables")
    if variables is not None and not isinstance(variables, Mapping):
        problems.add("spec.variables", f"must be a map of strings, not {describe(variables)}")
    for key, value in (variables or {}).items() if isinstance(variables, Mapping) else ():
        if not isinstance(value, str):
            problems.add(
                child_path("spec.variables", key),
                f"variable values must be strings, not {describe(value)}",
                "quote it",
            )
    if not isinstance(spec.get("purge", False), bool):
        problems.add("spec.purge", f"must be true or false, not {describe(spec['purge'])}")
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


# --- whole templates and instances -----------------------------------------------------------


def template_objects(template: Manifest) -> list[tuple[str, Manifest]]:
    """Every item's object with placeholders as PROBE, for the schema check without an instance."""
    spec = template.get("spec") if isinstance(template.get("spec"), Mapping) else {}
    out = []
    for section in SECTIONS:
        entries = spec.get(section) if isinstance(spec.get(section), list) else []
        for item in entries:
            if isinstance(item, Mapping) and is_dns_label(item.get("name")):
                path = f"{section}[{item['name']}]"
                out.append((path, _probe_object(section, item)))
                out += _patched_objects(section, item, path)
    return out


def _patched_objects(section: Section, item: Mapping, path: str) -> list[tuple[str, Manifest]]:
    """The item with each patch merged in, whatever its condition: a typo in a patch must show
    without an instance that selects it. Then all of them in order, as when every condition
    holds: a patch that conflicts with the bare item may merge after the others. Patches
    malformed in shape are _check_patches'."""
    out, every = [], item
    for index, patch in enumerate(item.get("patches") or []):
        if not isinstance(patch, Mapping) or not isinstance(patch.get("merge"), Mapping):
            continue
        where = f"{path}.patches[{index}]"
        if (alone := _merged_or_none(item, patch["merge"], where)) is not None:
            out.append((where, _probe_object(section, alone)))
        every = _merged_or_none(every, patch["merge"], where) or every
    if every is not item:
        out.append((f"{path}.patches", _probe_object(section, every)))
    return out


def _merged_or_none(item: Mapping, merge: Mapping, where: str) -> Mapping | None:
    try:
        return patches.merged(item, merge, where)
    except RenderError:
        return None


def _body(section: Section, item: Mapping) -> list[str]:
    """The item's fields that become the object's (besides metadata)."""
    if section != "otherResources":
        return ["spec"]
    return [k for k in item if k not in ITEM_FIELDS[section]]


def _probe_object(section: Section, item: Mapping) -> Manifest:
    api_version, kind = "v1", KINDS.get(section)
    if section == "otherResources":
        api_version, kind = item.get("apiVersion"), item.get("kind")
    body = {k: item.get(k) for k in _body(section, item)}
    meta = {"name": "probe", "namespace": "probe"}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **_probe(body)}


def rendered_objects(rendered: Rendered) -> list[tuple[str, Manifest]]:
    return [(f"{i.section}[{i.item}]", i.manifest) for i in rendered.items]


def template_problems(template: Manifest, subject: str) -> tuple[list[RenderError], list[str]]:
    """Shape, then (if the shape holds) every item against its schema."""
    problems = check_template(template, subject)
    if not depth_ok(template):  # the probes below recurse
        return problems, []
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


def _placeholder_key(node: Any) -> bool:
    """Does a map key outside labels and annotations hold a placeholder: a field name that
    an instance's variable decides, which the schema check could not judge?"""
    todo = [node]
    while todo:
        node = todo.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(key, str) and "{" in key:
                    return True
                if key not in ("labels", "annotations"):
                    todo.append(value)
        elif isinstance(node, list):
            todo.extend(node)
    return False


_TemplateVerdict = tuple[list[RenderError], list[str], bool]
_TEMPLATE_CACHE: dict[tuple[str, str, str], _TemplateVerdict] = {}
_CACHE_SIZE = 256


def _judged(template: Manifest, subject: str) -> _TemplateVerdict:
    return *template_problems(template, subject), not _placeholder_key(template.get("spec"))


def _cached_template_problems(template: Manifest, subject: str) -> _TemplateVerdict:
    """(problems, notes, every field name fixed): a template from the cluster is checked
    once per resourceVersion, not once per instance."""
    meta = template.get("metadata") if isinstance(template.get("metadata"), Mapping) else {}
    version = meta.get("resourceVersion")
    if not isinstance(version, str):
        return _judged(template, subject)
    key = (subject, str(meta.get("uid")), version)
    if key not in _TEMPLATE_CACHE:
        if len(_TEMPLATE_CACHE) >= _CACHE_SIZE:
            _TEMPLATE_CACHE.pop(next(iter(_TEMPLATE_CACHE)))
        _TEMPLATE_CACHE[key] = _judged(template, subject)
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
    problems, notes, fixed = _cached_template_problems(
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
    found, _ = check_objects(objects, subject, schema=schema_on_rendered)
    if not objects:
        notes = [*notes, f"{subject}: no item's condition holds, so the instance gets nothing"]
    if fixed and not found:  # every field name was judged by the schemas (apply.validation)
        rendered = replace(
            rendered, items=tuple(replace(i, fields_known=True) for i in rendered.items)
        )
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
