"""Compare what we would apply with what is live: pure functions, no I/O.

`drift` answers "does the live object still carry every value we set?" without a request, so a
steady state costs no apply. Only the leaves we set are compared (the apiserver adds defaults, and
admission may append list items such as token volumes), lists by index, resource quantities by
value ("1Gi" == "1024Mi", "0.5" == "500m"), and an empty value we set matches one the
apiserver omitted.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from jupyternetes_ssa.managed import fields_of

_QUANTITY = re.compile(
    r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_FACTORS = {
    None: 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
IGNORED_METADATA = (
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def quantity(value: Any) -> Decimal | None:
    """The numeric value of a Kubernetes resource quantity, or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    match = _QUANTITY.match(str(value))
    if not match:
        return None
    try:
        return Decimal(match.group(1)) * _FACTORS[match.group(2)]
    except InvalidOperation:
        return None


EMPTY = (
    {},
    [],
    "",
    False,
    0,
)  # what Go's omitempty drops: `initialDelaySeconds: 0` reads back absent


def _same_leaf(path: str, want: Any, have: Any) -> bool:
    """Equal, or equal once the apiserver's rewrites are allowed for: it omits empty values
    (`nodeSelector: {}`, `value: ""`, `hostNetwork: false`, `hostPort: 0`) and canonicalises
    quantities (`0.5Gi` is stored as `512Mi`, a divisor `1000m` as `1`) in the fields that
    hold quantities."""
    if want == have:
        return True
    if (
        have is None
        and not _kept_as_sent(path)
        and any(want == e and type(want) is type(e) for e in EMPTY)
    ):
        return True
    if not _holds_quantity(path):
        return False
    q_want, q_have = quantity(want), quantity(have)
    return q_want is not None and q_want == q_have


def _kept_as_sent(path: str) -> bool:
    """A ConfigMap's or Secret's values are stored as sent, `""` included: one gone is drift."""
    return path.startswith(("data", "stringData", "binaryData"))


def _holds_quantity(path: str) -> bool:
    """Resource requests/limits, PVC storage, emptyDir sizes, a ResourceQuota's and a
    LimitRange's amounts: not env values or annotations."""
    return (
        ".resources." in path
        or path.startswith(("spec.resources", "spec.hard", "spec.limits["))
        or path.endswith((".sizeLimit", ".overhead", ".divisor"))
    )


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    plain = key.replace("_", "").replace("-", "").isalnum()
    step = f".{key}" if plain else f'["{key}"]'
    return f"{path}{step}" if path else step.lstrip(".")


def drift(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths of the leaves of `desired` that `live` lacks or holds with another value."""
    return [] if holds(desired, live) else _drift(desired, live, path)


def holds(desired: Any, live: Any) -> bool:
    """`live` holds every leaf of `desired` exactly: the common case, checked without paths."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(holds(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) >= len(desired)
            and all(holds(v, have) for v, have in zip(desired, live, strict=False))
        )
    return desired == live


def _drift(desired: Any, live: Any, path: str) -> list[str]:
    """drift, walked with paths and the apiserver's rewrites allowed for."""
    if isinstance(desired, dict):
        if desired == {} and live is None:
            return []
        if not isinstance(live, dict):
            return [path or "."]
        return [p for k, v in desired.items() for p in _drift(v, live.get(k), _join(path, k))]
    if isinstance(desired, list):
        if desired == [] and live is None:
            return []
        if not isinstance(live, list) or len(live) < len(desired):
            return [path]
        return [p for i, v in enumerate(desired) for p in _drift(v, live[i], _join(path, i))]
    return [] if _same_leaf(path, desired, live) else [path]


def changes(before: Any, after: Any, path: str = "") -> list[str]:
    """Every path whose value differs between two whole objects (for `diff` and UpdatePending)."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        if not path:  # an apply never changes the status (and the caches keep only part of it)
            keys = [k for k in keys if k != "status"]
        if path == "metadata":
            keys = [k for k in keys if k not in IGNORED_METADATA]
        return [p for k in keys for p in changes(before.get(k), after.get(k), _join(path, k))]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in changes(b, a, _join(path, i))
        ]
    return [] if _same_leaf(path, after, before) else [path or "."]


def _managed_paths(fields: dict, prefix: tuple = ()) -> set[tuple]:
    """The fields a managedFields entry holds, as key paths; a list item stands for its list."""
    out: set[tuple] = set()
    for key, sub in fields.items():
        if key == ".":
            continue
        if not key.startswith("f:"):
            out.add(prefix)
            continue
        path = (*prefix, key[2:])
        children = {k: v for k, v in sub.items() if k != "."} if isinstance(sub, dict) else {}
        out |= _managed_paths(children, path) if children else {path}
    return out


def _set_paths(node: Any, prefix: tuple = ()) -> set[tuple]:
    """The key paths we set; a list counts as one field (we own it whole or by item)."""
    if isinstance(node, dict) and node:
        return {p for k, v in node.items() for p in _set_paths(v, (*prefix, k))}
    return {prefix}


def contested(desired: dict, live: dict, manager: str) -> list[str]:
    """Fields we set that another manager also holds (outside the status and other subresources).

    Such a manager may have extended them in ways `drift` cannot see (an extra rule in a list we
    set, an extra key in a map it took over); only the server can say what our apply would do.
    """
    ours = _set_paths({k: v for k, v in desired.items() if k not in ("apiVersion", "kind")})
    prefixes = {p[:i] for p in ours for i in range(1, len(p) + 1)}
    found: set[str] = set()
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == manager or entry.get("subresource"):
            continue
        for path in _managed_paths(fields_of(entry)):
            if path in prefixes or any(path[:i] in ours for i in range(1, len(path))):
                found.add(".".join(path))
    return sorted(found)
