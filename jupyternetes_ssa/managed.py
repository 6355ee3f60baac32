"""What a field manager last applied, read back from a live object's managedFields: pure.

Server-side apply records, per manager, the set of fields its last apply contained (`fieldsV1`).
Picking those fields out of the live object gives what we applied last time, with the live
values, and nothing defaulted or added by others (client-go calls this "extract"). Applying it
again changes nothing, so a metadata-only apply can carry the old spec; and comparing it with
what we would apply now says which fields a template change touches, removals included.
"""

from __future__ import annotations

import json
from copy import deepcopy
from typing import Any

from jupyternetes_ssa.types import Manifest


def applied_by(live: Manifest, manager: str) -> Manifest:
    """The fields `manager` set with its last apply (not via a subresource), live values."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            return _pick(live, entry.get("fieldsV1") or {})
    return {}


def _pick(value: Any, fields: dict[str, Any]) -> Any:
    """The part of `value` that the field set names; an empty set owns the whole value."""
    if not fields:
        return deepcopy(value)
    if isinstance(value, dict):
        return {
            key[2:]: _pick(value[key[2:]], sub)
            for key, sub in fields.items()
            if key.startswith("f:") and key[2:] in value
        }
    if isinstance(value, list):
        return [
            _pick(item, sub)
            for index, item in enumerate(value)
            for key, sub in fields.items()
            if _names(key, index, item)
        ]
    return deepcopy(value)


def _names(key: str, index: int, item: Any) -> bool:
    """Does a list element key (`k:` merge keys, `v:` a value, `i:` an index) name `item`?"""
    kind, _, raw = key.partition(":")
    if kind == "k":
        keys = json.loads(raw)
        return isinstance(item, dict) and all(item.get(k) == v for k, v in keys.items())
    if kind == "v":
        return item == json.loads(raw)
    if kind == "i":
        return index == int(raw)
    return False
