"""What a field manager last applied, read back from a live object's managedFields: pure.

Server-side apply records, per manager, the set of fields its last apply contained (`fieldsV1`).
Picking those fields out of the live object gives what we applied last time, with the live
values, and nothing defaulted or added by others (client-go calls this "extract"). Applying it
again changes nothing, so a metadata-only apply can carry the old spec; and comparing it with
what we would apply now says which fields a template change touches, removals included.
"""

from __future__ import annotations

import sys
from copy import deepcopy
from functools import lru_cache
from typing import Any

import orjson

from jupyternetes_ssa.types import Manifest


def fields_of(entry: dict[str, Any]) -> dict[str, Any]:
    """A managedFields entry's field set, whether as the server sent it or packed."""
    fields = entry.get("fieldsV1") or {}
    return orjson.loads(fields) if isinstance(fields, str) else fields


def packed(obj: Manifest) -> Manifest:
    """The object as the caches keep it (in place): managedFields without the entries of
    subresources (the kubelet's and scheduler's status writes, never compared with ours), and
    each field set as its JSON text. A field set is a tree of one small dict per field, the
    largest part of a cached pod; as text it takes a fifth of the memory, and it is read only
    when a template changes (applied_by) or another manager holds our fields (diff.contested)."""
    meta = obj.get("metadata") or {}
    entries = meta.get("managedFields")
    if entries:
        meta["managedFields"] = [
            e if isinstance(e.get("fieldsV1"), str) else {**e, "fieldsV1": _text(fields_of(e))}
            for e in entries
            if not e.get("subresource")
        ]
    return obj


FOLDED = "jupyternetes-ssa/folded"  # a packed entry's top-level fields kept whole in the object


def applied_by(live: Manifest, manager: str) -> Manifest:
    """The fields `manager` set with its last apply (not via a subresource), live values."""
    entry = _apply_entry(live, manager)
    if entry is None:
        return {}
    picked = _pick(live, fields_of(entry))
    for key in entry.get(FOLDED, ()):
        if key in live:
            picked[key] = deepcopy(live[key])
    return picked


def fold(obj: Manifest, manager: str, keys: list[str]) -> Manifest:
    """The object (in place) with `manager`'s field set cut to what is outside `keys`: the cache
    keeps of these top-level fields exactly what the manager applied, so the set would only
    repeat them (it was a third of a cached pod). applied_by reads them back whole."""
    entry = _apply_entry(obj, manager)
    if entry is not None and keys:
        fields = {k: v for k, v in fields_of(entry).items() if k[2:] not in keys}
        entry["fieldsV1"] = _text(fields)
        entry[FOLDED] = sorted(set(keys) | set(entry.get(FOLDED, ())))
    return obj


def _text(fields: dict[str, Any]) -> str:
    return orjson.dumps(fields).decode()


def _apply_entry(live: Manifest, manager: str) -> dict[str, Any] | None:
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            return entry
    return None


def shared_copy(node: Any) -> Any:
    """A deep copy of JSON data whose strings are shared with every equal string so copied:
    5,000 servers repeat the same images, URLs, names and states, and a third of the caches'
    memory was such copies (BENCHMARKS.md, "Profile")."""
    if isinstance(node, str):
        return sys.intern(node)
    if isinstance(node, dict):
        return {k: shared_copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [shared_copy(v) for v in node]
    return node


def _pick(value: Any, fields: dict[str, Any]) -> Any:
    """The part of `value` that the field set names (a shared_copy); an empty set owns the
    whole value."""
    if not isinstance(value, dict | list):
        return sys.intern(value) if isinstance(value, str) else value
    if not fields:
        return shared_copy(value)
    if isinstance(value, dict):
        return {
            key[2:]: _pick(value[key[2:]], sub)
            for key, sub in fields.items()
            if key.startswith("f:") and key[2:] in value
        }
    return _pick_items(value, fields)


def _pick_items(items: list[Any], fields: dict[str, Any]) -> list[Any]:
    """The list elements the field set names, in list order. Each key is parsed once, and
    merge keys (`k:`) are looked up by the element's values: a pod's lists hold dozens of
    elements and keys, and matching every pair cost most of a pass's CPU."""
    by_merge: dict[tuple[str, ...], dict[tuple[Any, ...], list[Any]]] = {}
    by_index: dict[int, list[Any]] = {}
    by_value: list[tuple[Any, Any]] = []
    for key, sub in fields.items():
        kind, parsed = _item_key(key)
        if kind == "k":
            names, values = parsed
            by_merge.setdefault(names, {}).setdefault(values, []).append(sub)
        elif kind == "v":
            by_value.append((orjson.loads(parsed), sub))
        elif kind == "i":
            by_index.setdefault(parsed, []).append(sub)
    picked = []
    for index, item in enumerate(items):
        subs = list(by_index.get(index, ()))
        if isinstance(item, dict):
            for names, found in by_merge.items():
                subs += found.get(_hashable(tuple(item.get(n) for n in names)), ())
        subs += [sub for value, sub in by_value if item == value]
        picked += [_pick(item, sub) for sub in subs]
    return picked


@lru_cache(maxsize=4096)
def _item_key(key: str) -> tuple[str, Any]:
    """A list element key, parsed once for all objects (5,000 pods repeat the same keys):
    `k:` -> (merge key names, their values), `v:` -> the value's JSON, `i:` -> the index."""
    kind, _, raw = key.partition(":")
    if kind == "k":
        wanted = orjson.loads(raw)
        names = tuple(sorted(wanted))
        return kind, (names, _hashable(tuple(wanted[n] for n in names)))
    if kind == "i":
        return kind, int(raw)
    return kind, raw


def _hashable(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Merge-key values as a dict key (they are scalars; anything else compares as its JSON)."""
    return tuple(
        v if isinstance(v, str | int | float | bool | None) else orjson.dumps(v) for v in values
    )
