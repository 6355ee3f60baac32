"""Item `patches`: partial items merged into a template item, in order: pure functions.

One template then serves many profiles: a GPU flavour is the standard item plus a patch that adds
a limit, a toleration and a node selector, instead of a copy that drifts apart. Merge rules, as
deepmerge strategies: maps merge key by key; lists whose items all carry a `name` (containers,
env, volumes, volumeMounts, ports, ...) merge item by item by name, an unknown name appended;
other lists are appended; a scalar replaces. A map or list never silently replaces a value of
another shape: that is an error naming the item, the patch and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from deepmerge import Merger

from jupyternetes_ssa.errors import RenderError
from jupyternetes_ssa.types import Section

# Item fields that configure the item rather than its object: a patch may not change them.
SETTINGS = frozenset(
    {
        "name",
        "resourceName",
        "ownedByInstance",
        "recreateOnChange",
        "updateStrategy",
        "deletionPolicy",
        "condition",
        "patches",
        "apiVersion",
        "kind",
        "metadata",
        "status",
    }
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Conflict(Exception):
    """Raised inside the merge with the path (in the patch) where shapes disagree."""

    def __init__(self, path: list, base: Any, nxt: Any):
        super().__init__(f"cannot merge a {_shape(nxt)} into a {_shape(base)}")
        self.path = path


def _shape(value: Any) -> str:
    if isinstance(value, Mapping):
        return "map"
    return "list" if isinstance(value, list) else f"scalar ({type(value).__name__})"


def _named(items: list) -> bool:
    return all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _lists(config: Merger, path: list, base: list, nxt: list) -> list:
    """Lists of named items merge by name (unknown names appended); other lists append."""
    if not (_named(base) and _named(nxt)):
        return base + nxt
    out = list(base)
    where = {item["name"]: i for i, item in enumerate(out)}
    for index, item in enumerate(nxt):
        at = where.get(item["name"])
        if at is None:
            where[item["name"]] = len(out)
            out.append(item)
        else:
            out[at] = config.value_strategy([*path, index], out[at], item)
    return out


def _conflict(config: Merger, path: list, base: Any, nxt: Any) -> Any:
    """A scalar replaces a scalar (or a null); maps and lists only merge with their own kind."""
    shaped = isinstance(base, dict | list) or isinstance(nxt, dict | list)
    if base is None or nxt is None or not shaped:
        return nxt
    raise _Conflict(path, base, nxt)


MERGER = Merger([(list, _lists), (dict, "merge")], ["override"], [_conflict])


def _join(path: str, steps: list) -> str:
    """The field path in the same style as render.py's messages."""
    for step in steps:
        if isinstance(step, int):
            path = f"{path}[{step}]"
        elif _IDENTIFIER.fullmatch(step):
            path = f"{path}.{step}"
        else:
            path = f"{path}[{json.dumps(step, ensure_ascii=False)}]"
    return path


def checked(section: Section, item: Mapping[str, Any], base: str) -> list[Mapping[str, Any]]:
    """The item's patches, each a map of `condition` (optional) and `merge` (a partial item)."""
    patches = item.get("patches")
    if patches is None:
        return []
    if not isinstance(patches, list):
        raise RenderError("patches must be a list", path=f"{base}.patches")
    for index, patch in enumerate(patches):
        where = f"{base}.patches[{index}]"
        if not isinstance(patch, Mapping) or not isinstance(patch.get("merge"), Mapping):
            raise RenderError(
                "a patch needs `merge`, a map with the fields to merge into the item",
                path=where,
                fix="e.g. {condition: {variable: profile, equals: gpu}, merge: {spec: {...}}}",
            )
        if unknown := sorted(set(patch) - {"condition", "merge"}):
            raise RenderError(f"unknown patch field(s) {unknown}", path=where)
        _check_fields(section, patch["merge"], f"{where}.merge")
    return patches


def _check_fields(section: Section, merge: Mapping[str, Any], path: str) -> None:
    """A patch changes the object (labels, annotations, spec, other kinds' body), not the item."""
    allowed = ("labels", "annotations", "spec")
    for key in merge:
        if key in SETTINGS or (section != "otherResources" and key not in allowed):
            raise RenderError(
                f"a patch cannot set {key!r}",
                path=_join(path, [str(key)]),
                fix="a patch may carry labels, annotations and spec"
                + (" and the object's other fields" if section == "otherResources" else ""),
            )
        if key in allowed and not isinstance(merge[key], Mapping):
            raise RenderError(f"{key} must be a map", path=_join(path, [key]))


def merged(item: Mapping[str, Any], merge: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A new item: `merge` deep-merged into `item` (neither is changed)."""
    try:
        return MERGER.merge(deepcopy(dict(item)), deepcopy(dict(merge)))
    except _Conflict as err:
        raise RenderError(
            str(err),
            path=_join(f"{where}.merge", err.path),
            fix="give the patch the same shape as the item's field",
        ) from None
