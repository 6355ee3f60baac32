"""Render a JupyterNotebookTemplate for a JupyterNotebookInstance: pure functions, no I/O.

Placeholders are `{name}`, looked up exactly (case-sensitive) in the instance's spec.variables
plus the built-ins below; `{{` and `}}` are literal braces. Values are inserted as text and never
re-scanned, so whatever a user puts in a variable cannot change the structure of what we create.
Rendering is all-or-nothing: any problem raises RenderError and nothing is returned.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deepmerge import always_merger

from jupyternetes_ssa import GROUP, VERSION, labels, patches
from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.names import is_dns_label, safe_label_value, safe_name, token_secret_name
from jupyternetes_ssa.shard import bucket_of
from jupyternetes_ssa.strategy import item_strategy
from jupyternetes_ssa.tenancy import template_key
from jupyternetes_ssa.types import SECTIONS, Manifest, ObjectRef, Rendered, RenderedItem, Section

INSTANCE_KIND = "JupyterNotebookInstance"
TEMPLATE_KIND = "JupyterNotebookTemplate"
KINDS: dict[Section, str] = {"pvcs": "PersistentVolumeClaim", "pods": "Pod"}
# Item fields that configure us rather than the object; every other field of an otherResources
# item (spec, data, stringData, rules, ...) becomes a top-level field of the object.
ITEM_FIELDS = frozenset(
    {
        "name",
        "resourceName",
        "labels",
        "annotations",
        "ownedByInstance",
        "recreateOnChange",
        "updateStrategy",
        "patches",
        "deletionPolicy",
        "condition",
        "adopt",
        "apiVersion",
        "kind",
    }
)
CONDITION_OPERATORS = ("equals", "notEquals", "in", "notIn", "present")

VAR_INSTANCE_NAME = "jupyternetes.instance.name"
VAR_INSTANCE_NAMESPACE = "jupyternetes.instance.namespace"
VAR_TEMPLATE_NAME = "jupyternetes.template.name"
VAR_TEMPLATE_NAMESPACE = "jupyternetes.template.namespace"
VAR_API_TOKEN_SECRET = "jupyterhub.api_token_secret"  # only with spec.sealedApiToken (tokens.py)
ITEM_VAR_PREFIX: dict[Section, str] = {
    "pvcs": "jupyternetes.pvcs.",
    "otherResources": "jupyternetes.other.",
    "pods": "jupyternetes.pods.",
}

# A well-formed placeholder name; anything else after `{` is a brace error.
_NAME = r"[A-Za-z0-9_./-]+"
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + _NAME + r")\}|[{}]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACE_FIX = 'write {{ for a literal "{" and }} for a literal "}"'
_UNKNOWN_FIX = "add it to the instance's spec.variables, or write {{...}} for literal braces"


# --- placeholder expansion -------------------------------------------------------------------


def placeholders(text: str) -> list[str]:
    """The variable names `text` refers to, in order (escaped braces and bad braces skipped)."""
    return [m.group(1) for m in _TOKEN.finditer(text) if m.group(1) is not None]


def expand(text: str, variables: Mapping[str, str], path: str = "") -> str:
    """Replace every `{name}` in one template string; values are inserted verbatim, once."""
    if "{" not in text and "}" not in text:
        return text
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(text[pos : m.start()])
        token, name = m.group(0), m.group(1)
        if name is not None:
            out.append(_lookup(name, variables, path))
        elif token in ("{{", "}}"):
            out.append(token[0])
        else:
            raise _error(_brace_message(text, m.start()), path, _BRACE_FIX)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _lookup(name: str, variables: Mapping[str, str], path: str) -> str:
    """One exact lookup; on a miss, say what is missing and the likely typo."""
    if name in variables:
        return variables[name]
    fix = _UNKNOWN_FIX
    close = difflib.get_close_matches(name, list(variables), n=1)
    if close:
        fix = f'did you mean "{close[0]}"? Otherwise {fix}'
    for section, prefix in ITEM_VAR_PREFIX.items():
        if name.startswith(prefix):
            fix = f"the template has no {section} item named {name[len(prefix) :]!r}; {fix}"
    raise _error(f'unknown variable "{name}"', path, fix)


def _brace_message(text: str, at: int) -> str:
    """Explain a stray brace without echoing more of the template than needed."""
    snippet = text if len(text) <= 80 else text[max(0, at - 30) : at + 30]
    return f"unmatched {text[at]!r} at character {at} of {_q(snippet)}"


def _error(message: str, path: str, fix: str = "") -> RenderError:
    """A RenderError without subject: render() adds the instance, which inner code doesn't know."""
    return RenderError(message, path=path, fix=fix)


def _q(value: object) -> str:
    """Quote a key or name for a message, unambiguously but readably."""
    return json.dumps(value, ensure_ascii=False)


# --- walking a tree --------------------------------------------------------------------------


def child_path(path: str, key: object) -> str:
    """`a.b` for identifier keys, `a["my/key"]` otherwise (the style kubectl explain users read)."""
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_q(key)}]"


def render_tree(node: Any, variables: Mapping[str, str], path: str) -> Any:
    """Expand placeholders in every string value and map key; other scalars pass through.

    The walk first runs without building field paths (most of a render's cost when it did);
    only a tree that fails is walked again with paths, so that the error names the field."""
    try:
        return _render_fast(node, variables)
    except RenderError:
        return _render_traced(node, variables, path)


_SCALARS = (int, float, bool, type(None))


def _render_fast(node: Any, variables: Mapping[str, str]) -> Any:
    """render_tree without paths; raises a pathless RenderError that the caller redoes."""
    if isinstance(node, str):
        return expand(node, variables) if "{" in node or "}" in node else node
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(key, str) and ("{" in key or "}" in key):
                key = expand(key, variables)
                if key in out:
                    raise RenderError("keys collide")  # the traced walk says which
            out[key] = _render_fast(value, variables)
        if len(out) != len(node):
            raise RenderError("keys collide")
        return out
    if isinstance(node, list):
        return [_render_fast(v, variables) for v in node]
    return node if isinstance(node, _SCALARS) else copy.deepcopy(node)


def _render_traced(node: Any, variables: Mapping[str, str], path: str) -> Any:
    """The walk that knows each node's field path, for the error message."""
    if isinstance(node, str):
        return expand(node, variables, path)
    if isinstance(node, Mapping):
        return _render_map(node, variables, path)
    if isinstance(node, list):
        return [_render_traced(v, variables, f"{path}[{i}]") for i, v in enumerate(node)]
    return copy.deepcopy(node)


def _render_map(node: Mapping[Any, Any], variables: Mapping[str, str], path: str) -> dict:
    """Render keys too, refusing two keys that end up equal (one would silently vanish)."""
    out: dict[Any, Any] = {}
    source: dict[Any, Any] = {}
    for key, value in node.items():
        new_key = key
        if isinstance(key, str):
            new_key = expand(key, variables, f"{path} key {_q(key)}")
        if new_key in out:
            message = f"keys {_q(source[new_key])} and {_q(key)} both render to"
            raise _error(f"{message} {_q(new_key)}", path, "make the keys differ")
        source[new_key] = key
        out[new_key] = _render_traced(value, variables, child_path(path, key))
    return out


# --- the instance, the template and their built-ins ------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What every item of one render shares."""

    instance: ObjectRef
    template: ObjectRef
    uid: str | None
    variables: Mapping[str, str]


def _get(doc: Mapping[str, Any], *keys: str) -> Any:
    """Nested lookup that treats a missing or null level as absent."""
    for key in keys:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _instance_ref(instance: Manifest) -> ObjectRef:
    """The instance's identity; both name and namespace are needed to place objects."""
    name, namespace = _get(instance, "metadata", "name"), _get(instance, "metadata", "namespace")
    subject = f"{INSTANCE_KIND} {namespace or '?'}/{name or '?'}"
    for field, value in (("name", name), ("namespace", namespace)):
        if not isinstance(value, str) or not value:
            raise RenderError(
                f"the instance has no metadata.{field}",
                subject=subject,
                path=f"metadata.{field}",
                fix=f"set metadata.{field}",
            )
    return ObjectRef(INSTANCE_KIND, namespace, name)


def template_namespace(template: Manifest, instance: Manifest) -> str:
    """The template's own namespace, else the one the instance names, else the instance's."""
    return (
        _get(template, "metadata", "namespace")
        or _get(instance, "spec", "template", "namespace")
        or _get(instance, "metadata", "namespace")
        or ""
    )


def _instance_variables(instance: Manifest) -> dict[str, str]:
    """spec.variables, checked to be strings (the CRD says so; a YAML `1` would be an int)."""
    raw = _get(instance, "spec", "variables") or {}
    if not isinstance(raw, Mapping):
        raise _error("spec.variables must be a map of strings", "spec.variables")
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            path = f"spec.variables[{_q(str(key))}]"
            raise _error(
                f"variable values must be strings, not {type(value).__name__}", path, "quote it"
            )
    return dict(raw)


def _check_no_override(user: Mapping[str, str], builtins: Mapping[str, str]) -> None:
    """A variable may repeat a built-in (the spawner sends some) but never change it."""
    for name, value in builtins.items():
        if name in user and user[name] != value:
            raise _error(
                f'"{name}" is a built-in variable ({_q(value)}); '
                f"the instance may not set it to {_q(user[name])}",
                f"spec.variables[{_q(name)}]",
                "remove it from spec.variables",
            )


def _check_reserved(user: Mapping[str, str], item_names: Mapping[str, str]) -> None:
    """`jupyternetes.pods.*`/`.pvcs.*` are ours: refuse ones naming no item (typo shadowing)."""
    for name in user:
        if name.startswith(tuple(ITEM_VAR_PREFIX.values())) and name not in item_names:
            raise _error(
                f'"{name}" is reserved for the names of template items, and no item has that name',
                f"spec.variables[{_q(name)}]",
                "remove it from spec.variables",
            )


def _base_variables(
    user: Mapping[str, str], inst: ObjectRef, tmpl: ObjectRef, sealed_token: bool = False
) -> dict[str, str]:
    """Instance variables plus the instance/template built-ins (item names come later)."""
    builtins = {
        VAR_INSTANCE_NAME: inst.name,
        VAR_INSTANCE_NAMESPACE: inst.namespace,
        VAR_TEMPLATE_NAME: tmpl.name,
        VAR_TEMPLATE_NAMESPACE: tmpl.namespace,
    }
    if sealed_token:
        builtins[VAR_API_TOKEN_SECRET] = token_secret_name(inst.name)
    elif VAR_API_TOKEN_SECRET in user:  # it names a Secret the pod reads: never the sender's
        raise _error(
            f'"{VAR_API_TOKEN_SECRET}" is reserved: the reconciler sets it, only for an instance '
            "with spec.sealedApiToken",
            f"spec.variables[{_q(VAR_API_TOKEN_SECRET)}]",
            "remove it from spec.variables (the spawner seals the token into spec.sealedApiToken)",
        )
    _check_no_override(user, builtins)
    return {**user, **builtins}


# --- items -----------------------------------------------------------------------------------


def _items(template: Manifest) -> list[tuple[Section, Mapping[str, Any]]]:
    """Template items, PVCs first, each checked for the fields everything else relies on."""
    out: list[tuple[Section, Mapping[str, Any]]] = []
    for section in SECTIONS:
        entries = _get(template, "spec", section) or []
        if not isinstance(entries, list):
            raise _error(f"spec.{section} must be a list", f"spec.{section}")
        seen: set[str] = set()
        for index, item in enumerate(entries):
            name = _check_item(section, index, item)
            if name in seen:
                raise _error(
                    f"two {section} items are named {name!r}", f"spec.{section}[{index}].name"
                )
            seen.add(name)
            out.append((section, item))
    return out


def _check_item(section: Section, index: int, item: Any) -> str:
    """Return the item's name after checking the shape the CRD promises (files skip the CRD)."""
    path = f"spec.{section}[{index}]"
    if not isinstance(item, Mapping):
        raise _error("a template item must be a map", path)
    name = item.get("name")
    if not is_dns_label(name):
        raise _error(f"item name {_q(name)} is not a DNS label", f"{path}.name", "rename it")
    path = f"{section}[{name}]"
    if section == "otherResources":
        _check_other(item, path)
    elif not isinstance(item.get("spec"), Mapping):
        raise _error("the item has no spec map", f"{path}.spec", "add its spec")
    for field in ("labels", "annotations"):
        if not isinstance(item.get(field) or {}, Mapping):
            raise _error(f"{field} must be a map", f"{path}.{field}")
    for field in ("ownedByInstance", "recreateOnChange", "adopt"):
        if not isinstance(item.get(field, False), bool):
            raise _error(f"{field} must be true or false", f"{path}.{field}")
    if item.get("deletionPolicy", "Retain") not in ("Retain", "Delete"):
        raise _error("deletionPolicy must be Retain or Delete", f"{path}.deletionPolicy")
    return name


def _check_other(item: Mapping[str, Any], path: str) -> None:
    """An otherResources item names its kind; its body is any top-level field but ours."""
    for field in ("apiVersion", "kind"):
        if not isinstance(item.get(field), str) or not item.get(field):
            raise _error(
                f"an otherResources item needs {field}",
                f"{path}.{field}",
                f"set {field} (e.g. apiVersion: v1, kind: ConfigMap)",
            )
    for field in ("metadata", "status", "namespace"):
        if field in item:
            raise _error(
                f"{field} cannot be set on a template item",
                f"{path}.{field}",
                "objects always go to the instance's namespace; use the item's "
                "name/resourceName, labels and annotations",
            )


def _check_condition(condition: Any, path: str) -> None:
    """The small, safe rule language: one variable, then any of the operators, all must hold."""
    if not isinstance(condition, Mapping) or not isinstance(condition.get("variable"), str):
        raise _error(
            "a condition needs `variable`, the name of the variable it tests",
            path,
            "e.g. condition: {variable: profile, equals: gpu}",
        )
    unknown = set(condition) - {"variable", *CONDITION_OPERATORS}
    if unknown:
        raise _error(
            f"unknown condition field(s) {sorted(unknown)}",
            path,
            f"use variable with {', '.join(CONDITION_OPERATORS)}",
        )
    if not any(op in condition for op in CONDITION_OPERATORS):
        raise _error(
            "a condition needs an operator", path, f"add one of {', '.join(CONDITION_OPERATORS)}"
        )
    for op in ("in", "notIn"):
        if op in condition and not (
            isinstance(condition[op], list) and all(isinstance(v, str) for v in condition[op])
        ):
            raise _error(f"{op} must be a list of strings", f"{path}.{op}")
    for op in ("equals", "notEquals"):
        if op in condition and not isinstance(condition[op], str):
            raise _error(f"{op} must be a string", f"{path}.{op}", "quote the value")
    if "present" in condition and not isinstance(condition["present"], bool):
        raise _error("present must be true or false", f"{path}.present")


def _check_condition_variable(
    condition: Mapping[str, Any], variables: Mapping[str, str], path: str
) -> None:
    """Only `present` may test a variable the instance does not send: a misspelt variable must
    not silently drop an item from every instance (and have its objects pruned)."""
    name = condition["variable"]
    if name.startswith(tuple(ITEM_VAR_PREFIX.values())):
        raise _error(
            f'a condition may not test "{name}": object names are not known yet',
            f"{path}.variable",
            "test an instance variable or jupyternetes.instance.*/template.*",
        )
    if name in variables or "present" in condition:
        return
    fix = 'send it from the spawner, or test for it first with "present: true"'
    close = difflib.get_close_matches(name, list(variables), n=1)
    if close:
        fix = f'did you mean "{close[0]}"? Otherwise {fix}'
    raise _error(
        f'the condition tests variable "{name}", which the instance does not send',
        f"{path}.variable",
        fix,
    )


def condition_holds(condition: Mapping[str, Any] | None, variables: Mapping[str, str]) -> bool:
    """True when the item should exist: no condition, or every operator given holds."""
    if condition is None:
        return True
    value = variables.get(condition["variable"])
    checks = {
        "present": lambda want: (value is not None) is want,
        "equals": lambda want: value == want,
        "notEquals": lambda want: value != want,
        "in": lambda want: value in want,
        "notIn": lambda want: value not in want,
    }
    return all(check(condition[op]) for op, check in checks.items() if op in condition)


def _active_items(
    items: list[tuple[Section, Mapping[str, Any]]], variables: Mapping[str, str]
) -> list[tuple[Section, Mapping[str, Any]]]:
    """The items whose condition holds for this instance (the others are simply not wanted)."""
    active = []
    for section, item in items:
        if item.get("condition") is not None:
            path = f"{section}[{item['name']}].condition"
            _check_condition(item["condition"], path)
            _check_condition_variable(item["condition"], variables, path)
        if condition_holds(item.get("condition"), variables):
            active.append((section, item))
    return active


def _kind_of(section: Section, item: Mapping[str, Any]) -> tuple[str, str]:
    """(apiVersion, kind) of the object an item makes."""
    if section == "otherResources":
        return item["apiVersion"], item["kind"]
    return "v1", KINDS[section]


def _object_name(section: Section, item: Mapping[str, Any], ctx: _Context) -> str:
    """`<instance>-<item>` or the rendered resourceName, made a valid DNS label."""
    pattern = item.get("resourceName")
    if pattern is None:
        return safe_name(f"{ctx.instance.name}-{item['name']}")
    path = f"{section}[{item['name']}].resourceName"
    if not isinstance(pattern, str):
        raise _error("resourceName must be a string", path)
    for name in placeholders(pattern):
        if name.startswith(tuple(ITEM_VAR_PREFIX.values())):
            raise _error(
                f'resourceName may not use "{name}": object names are not known yet',
                path,
                "use the instance's variables or jupyternetes.instance.*/template.* only",
            )
    return safe_name(expand(pattern, ctx.variables, path))


def _object_names(
    items: list[tuple[Section, Mapping[str, Any]]], ctx: _Context
) -> dict[tuple[Section, str], str]:
    """Every item's final name; two items of one kind may not share an object."""
    names: dict[tuple[Section, str], str] = {}
    taken: dict[tuple[str, str], str] = {}
    for section, item in items:
        name = _object_name(section, item, ctx)
        kind = _kind_of(section, item)[1]
        if (kind, name) in taken:
            field = ".resourceName" if "resourceName" in item else ""
            raise _error(
                f'renders to the same {kind} name "{name}" as {taken[kind, name]}',
                f"{section}[{item['name']}]{field}",
                "give the items different resourceName patterns",
            )
        taken[kind, name] = f"{section}[{item['name']}]"
        names[section, item["name"]] = name
    return names


def _owner_reference(ctx: _Context) -> dict[str, Any]:
    """Makes the instance the controller, so deleting it lets Kubernetes collect the object.

    blockOwnerDeletion lets a Foreground delete of the instance (the spawner's stop) return only
    once the object is gone.
    """
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": INSTANCE_KIND,
        "name": ctx.instance.name,
        "uid": ctx.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _our_labels(section: Section, item_name: str, ctx: _Context) -> dict[str, str]:
    """The labels selectors and garbage collection rely on; values made valid label values."""
    return {
        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.INSTANCE: safe_label_value(ctx.instance.name),
        labels.INSTANCE_NAMESPACE: safe_label_value(ctx.instance.namespace),
        labels.TEMPLATE: safe_label_value(ctx.template.name),
        labels.TEMPLATE_NAMESPACE: safe_label_value(ctx.template.namespace),
        labels.ITEM_LABEL[section]: item_name,
        labels.SHARD_BUCKET: bucket_of(ctx.instance.namespace, ctx.instance.name),
    }


def _owned(section: Section, item: Mapping[str, Any], ctx: _Context) -> bool:
    """Pods and other objects are owned unless opted out; PVCs hold user data: only opted in."""
    return ctx.uid is not None and item.get("ownedByInstance", section != "pvcs") is True


def _render_item(
    section: Section, item: Mapping[str, Any], name: str, ctx: _Context
) -> RenderedItem:
    """One template item -> one manifest, admin labels kept but ours winning."""
    base = f"{section}[{item['name']}]"
    admin_labels = render_tree(item.get("labels") or {}, ctx.variables, f"{base}.labels")
    annotations = render_tree(item.get("annotations") or {}, ctx.variables, f"{base}.annotations")
    ours = _our_labels(section, item["name"], ctx)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ctx.instance.namespace,
        "labels": always_merger.merge(copy.deepcopy(admin_labels), copy.deepcopy(ours)),
    }
    if annotations:
        metadata["annotations"] = annotations
    if _owned(section, item, ctx):
        metadata["ownerReferences"] = [_owner_reference(ctx)]
    api_version, kind = _kind_of(section, item)
    manifest = {"apiVersion": api_version, "kind": kind, "metadata": metadata}
    for field, value in _body(section, item).items():
        manifest[field] = render_tree(value, ctx.variables, f"{base}.{field}")
    return RenderedItem(
        section=section,
        item=item["name"],
        manifest=manifest,
        update_strategy=item_strategy(section, item, base),
        deletion_policy=item.get("deletionPolicy", "Retain" if section == "pvcs" else "Delete"),
        adopt=item.get("adopt", False),
    )


def _patched(section: Section, item: Mapping[str, Any], variables: Mapping[str, str]) -> Mapping:
    """The item with each of its `patches` whose condition holds merged in, in order."""
    base = f"{section}[{item['name']}]"
    for index, patch in enumerate(patches.checked(section, item, base)):
        where = f"{base}.patches[{index}]"
        if patch.get("condition") is not None:
            _check_condition(patch["condition"], f"{where}.condition")
            _check_condition_variable(patch["condition"], variables, f"{where}.condition")
        if condition_holds(patch.get("condition"), variables):
            render_tree(patch["merge"], variables, f"{where}.merge")  # errors name the patch
            item = patches.merged(item, patch["merge"], where)
    return item


def _body(section: Section, item: Mapping[str, Any]) -> dict[str, Any]:
    """What goes into the object besides metadata: `spec`, or for other kinds any field."""
    if section != "otherResources":
        return {"spec": item["spec"]}
    return {k: v for k, v in item.items() if k not in ITEM_FIELDS}


# --- public entry points ---------------------------------------------------------------------


def render(template: Manifest, instance: Manifest) -> Rendered:
    """Return every object the instance should have (PVCs, other objects, then pods), or raise
    RenderError. Items whose `condition` does not hold are left out."""
    inst = _instance_ref(instance)
    try:
        return _render(template, instance, inst)
    except RenderError as err:
        if err.subject:
            raise
        raise RenderError(err.message, subject=str(inst), path=err.path, fix=err.fix) from None


def _render(template: Manifest, instance: Manifest, inst: ObjectRef) -> Rendered:
    """render() without the error subject: variables, then names, then every item."""
    tmpl_name = _get(template, "metadata", "name")
    if not isinstance(tmpl_name, str) or not tmpl_name:
        raise _error("the template has no metadata.name", "template metadata.name")
    tmpl = ObjectRef(TEMPLATE_KIND, template_namespace(template, instance), tmpl_name)
    uid = _get(instance, "metadata", "uid") or None
    user = _instance_variables(instance)
    sealed = _get(instance, "spec", "sealedApiToken") is not None
    ctx = _Context(inst, tmpl, uid, _base_variables(user, inst, tmpl, sealed))
    items = _active_items(_items(template), ctx.variables)
    names = _object_names(items, ctx)
    item_vars = {f"{ITEM_VAR_PREFIX[s]}{i}": n for (s, i), n in names.items()}
    _check_no_override(user, item_vars)
    _check_reserved(user, item_vars)
    ctx = _Context(inst, tmpl, uid, {**ctx.variables, **item_vars})
    rendered = tuple(
        _render_item(s, _patched(s, item, ctx.variables), names[s, item["name"]], ctx)
        for s, item in items
    )
    return Rendered(instance=inst, template=tmpl, items=rendered)


def select_template(templates: list[Manifest], instance: Manifest) -> Manifest:
    """The template the instance names; a namespace on the template doc must match too."""
    namespace, want = template_key(instance)
    candidates = [
        t
        for t in templates
        if isinstance(t, Mapping)
        and t.get("kind", TEMPLATE_KIND) == TEMPLATE_KIND
        and _get(t, "metadata", "name") == want
        and _get(t, "metadata", "namespace") in (None, "", namespace)
    ]
    exact = [t for t in candidates if _get(t, "metadata", "namespace")] or candidates
    subject = f"{INSTANCE_KIND} {_get(instance, 'metadata', 'namespace') or '?'}/"
    subject += _get(instance, "metadata", "name") or "?"
    if len(exact) != 1:
        problem = "no" if not exact else f"{len(exact)}"
        raise RenderError(
            f'{problem} {TEMPLATE_KIND} named "{want}" in namespace "{namespace}"',
            subject=subject,
            path="spec.template.name",
            fix="create that template, or correct spec.template.name/namespace",
        )
    return exact[0]
