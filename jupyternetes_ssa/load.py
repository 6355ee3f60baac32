"""Read YAML files of templates and instances with bounded cost, as JSON-compatible data.

The offline commands (`render`, `validate`) read whatever file they are given, so reading must
stay bounded in memory and time whatever the file holds: its size is capped before parsing, the
event stream is checked for nesting depth and for the size aliases would expand to (a 500-byte
"billion laughs" file is refused, not expanded) before any object is built, and what YAML reads
as something JSON cannot carry (dates, `.nan`, binary, sets, non-string keys, duplicate keys) is
refused with the line, rather than printed as invalid JSON or silently changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from jupyternetes_ssa.errors import JupyternetesError
from jupyternetes_ssa.validate import MAX_DEPTH

MAX_FILE_BYTES = 2 * 1024 * 1024  # above etcd's 1.5 MiB object limit: no real object is larger
MAX_NODES = 500_000  # per file, counting every alias as the copy it becomes

# libyaml's parser is iterative and fast; its composer recurses, so depth is checked before it.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_JSON_SCALARS = {f"{_TAG}{t}" for t in ("str", "int", "bool", "null", "float")}
_TAG_NAMES = {
    "timestamp": "a date or time",
    "binary": "binary data",
    "set": "a set",
    "omap": "an ordered map",
    "pairs": "a list of pairs",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (YAML reads unquoted yes/no/on/off/true/false as one)",
    "null": "null",
}
_FIX = "quote it, so that YAML reads it as a string"


class LoadError(JupyternetesError):
    """A file cannot be read as Kubernetes objects (too big, not YAML, or not JSON-compatible)."""

    reason = "BadInput"


def load_documents(path: Path, max_bytes: int = MAX_FILE_BYTES) -> list[dict[str, Any]]:
    """The objects (YAML mappings) of a file, in order; empty documents are skipped."""
    text = _read(path, max_bytes)
    try:
        _check_events(text, str(path))
        loader = _Loader(text)
        try:
            docs = []
            while loader.check_node():
                node = loader.get_node()
                _check_nodes(node, str(path))
                docs.append(loader.construct_document(node))
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise LoadError(f"not valid YAML: {err}", subject=str(path)) from None
    for number, doc in enumerate(docs, 1):
        if doc is not None and not isinstance(doc, dict):
            raise LoadError(
                f"document {number} is a {_type(doc)}, not a Kubernetes object",
                subject=str(path),
                fix="each YAML document must be a mapping with apiVersion, kind, metadata",
            )
    return [d for d in docs if d]


def _read(path: Path, max_bytes: int) -> str:
    """At most max_bytes of UTF-8 text; reading stops there (a device or pipe can be endless)."""
    try:
        if stat.S_ISFIFO(os.stat(path).st_mode):  # opening it would wait for a writer, for ever
            raise LoadError("is a named pipe, not a file", subject=str(path), fix="name a file")
        with open(path, "rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as err:
        raise LoadError(err.strerror or str(err), subject=str(path)) from None
    if len(data) > max_bytes:
        raise LoadError(
            f"the file is larger than {max_bytes} bytes",
            subject=str(path),
            fix="split it into several files (one object is never that large)",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LoadError(
            f"not UTF-8 text (byte {err.start})", subject=str(path), fix="save it as UTF-8"
        ) from None


def _check_events(text: str, subject: str) -> None:
    """Depth, expanded size and self-referencing aliases, from events alone (nothing built)."""
    stack: list[list[Any]] = []  # [anchor, expanded size so far] per open collection
    sizes: dict[str, int] = {}
    total = 0  # values the document expands to: each collection, scalar and alias copy once
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _at(event, subject, f"nested deeper than {MAX_DEPTH} levels", "flatten it")
            stack.append([event.anchor, 1])
            total += 1
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
        elif isinstance(event, yaml.AliasEvent):
            if any(frame[0] == event.anchor for frame in stack):
                raise _at(event, subject, f"alias *{event.anchor} refers to itself", "remove it")
            anchor, size = None, sizes.get(event.anchor, 1)
            total += size
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
            total += 1
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        if stack:
            stack[-1][1] += size
        if total > MAX_NODES:
            raise _at(
                event,
                subject,
                f"expands to more than {MAX_NODES} values (aliases count as copies)",
                "write the values out, or use fewer aliases",
            )


def _check_nodes(root: yaml.Node, subject: str) -> None:
    """Every scalar must be a JSON type, every key a string, no key twice in one mapping."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node, subject)
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            _check_keys(node, subject)
            todo.extend(v for _, v in node.value)
            todo.extend(k for k, _ in node.value if not isinstance(k, yaml.ScalarNode))


def _check_scalar(node: yaml.ScalarNode, subject: str) -> None:
    if node.tag not in _JSON_SCALARS:
        what = _TAG_NAMES.get(node.tag.removeprefix(_TAG), f"tagged {node.tag}")
        raise _at(node, subject, f"{node.value!r} is {what}, which JSON cannot carry", _FIX)
    try:
        node.value.encode("utf-8")
    except UnicodeEncodeError:
        raise _at(node, subject, "holds a lone surrogate (not Unicode text)", "remove it") from None
    if node.tag == f"{_TAG}float" and node.value.lower().lstrip("+-") in (".nan", ".inf"):
        raise _at(node, subject, f"{node.value!r} is not a number JSON can carry", _FIX)
    if not node.style and (  # plain (the C loader says "", the Python one None)
        (node.tag == f"{_TAG}str" and node.value in ("y", "Y", "n", "N"))
        or (node.tag in (f"{_TAG}int", f"{_TAG}float") and ":" in node.value)
    ):  # kubectl's YAML reads these otherwise (y/n a boolean, 1:20 a string): the two disagree
        raise _at(node, subject, f"unquoted {node.value!r} reads differently in kubectl", _FIX)


def _check_keys(node: yaml.MappingNode, subject: str) -> None:
    keys: dict[str, yaml.Node] = {}
    for key, _ in node.value:
        if key.tag == f"{_TAG}merge":
            continue
        if not isinstance(key, yaml.ScalarNode) or key.tag != f"{_TAG}str":
            value = key.value if isinstance(key, yaml.ScalarNode) else "a collection"
            what = _TAG_NAMES.get(key.tag.removeprefix(_TAG), f"tagged {key.tag}")
            raise _at(key, subject, f"the key {value!r} is {what}; keys must be strings", _FIX)
        if key.value in keys:
            first = keys[key.value].start_mark.line + 1
            raise _at(key, subject, f"the key {key.value!r} is also on line {first}", "keep one")
        keys[key.value] = key


def _at(where: yaml.Node | yaml.Event, subject: str, message: str, fix: str) -> LoadError:
    mark = where.start_mark
    return LoadError(message, subject=f"{subject}:{mark.line + 1}:{mark.column + 1}", fix=fix)


def _type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
