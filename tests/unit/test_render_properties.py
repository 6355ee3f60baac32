"""Property tests: variable values are data, never structure; slugs are valid and distinct."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jupyternetes_ssa.names import is_dns_label, is_label_value, safe_label_value, safe_name
from jupyternetes_ssa.render import expand, render, render_tree

FAST = settings(max_examples=60, deadline=None)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VARS = ("a", "b.c", "d/e")

# Arbitrary text, plus the kinds of text most likely to break a naive renderer.
NASTY = st.sampled_from(
    ["{", "}", "{{", "}}", "{a}", "${HOME}", '"', "'", "\n", "key: [1, {x: y}]\n- z", "# c", ""]
)
VALUES = st.one_of(st.text(), NASTY, st.lists(st.one_of(st.text(max_size=5), NASTY)).map("".join))


def escape(text: str) -> str:
    """What a template author writes to get `text` literally."""
    return text.replace("{", "{{").replace("}", "}}")


# --- random trees: template text built from literal and placeholder segments -------------------


class Text(tuple):
    """A template string as segments: ("lit", text) or ("var", name); hashable for dict keys."""

    def template(self) -> str:
        return "".join(escape(v) if kind == "lit" else "{" + v + "}" for kind, v in self)

    def expected(self, variables: dict[str, str]) -> str:
        return "".join(v if kind == "lit" else variables[v] for kind, v in self)


SEGMENT = st.one_of(
    st.tuples(st.just("lit"), st.text(max_size=6)), st.tuples(st.just("var"), st.sampled_from(VARS))
)
TEXT = st.lists(SEGMENT, max_size=4).map(Text)
LITERAL_KEY = st.text(max_size=6).map(lambda s: Text([("lit", s)]))
SCALAR = st.one_of(TEXT, st.integers(), st.booleans(), st.none())
TREES = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(LITERAL_KEY, inner, max_size=3)
    ),
    max_leaves=12,
)


def as_template(tree: Any) -> Any:
    if isinstance(tree, Text):
        return tree.template()
    if isinstance(tree, dict):
        return {k.template(): as_template(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [as_template(v) for v in tree]
    return tree


def as_expected(tree: Any, variables: dict[str, str]) -> Any:
    if isinstance(tree, Text):
        return tree.expected(variables)
    if isinstance(tree, dict):
        return {k.expected(variables): as_expected(v, variables) for k, v in tree.items()}
    if isinstance(tree, list):
        return [as_expected(v, variables) for v in tree]
    return tree


@FAST
@given(tree=TREES, values=st.tuples(VALUES, VALUES, VALUES))
def test_any_tree_renders_to_its_segments_with_values_verbatim(tree, values):
    variables = dict(zip(VARS, values, strict=True))
    assert render_tree(as_template(tree), variables, "x") == as_expected(tree, variables)


@FAST
@given(text=st.text())
def test_escaping_round_trips_any_text(text):
    assert expand(escape(text), {}) == text


# --- the rich example: random values vs. sentinel values ------------------------------------

SENTINEL = re.compile(r"@@V(\d+)@@")


def shape(node: Any) -> Any:
    """Structure without string contents: map sizes, list lengths, scalar types."""
    if isinstance(node, dict):
        return ("map", [shape(v) for v in node.values()])
    if isinstance(node, list):
        return ("list", [shape(v) for v in node])
    return type(node).__name__


def rich_pair() -> tuple[dict, dict]:
    return tuple(
        yaml.safe_load((EXAMPLES / f"rich-{k}.yaml").read_text()) for k in ("template", "instance")
    )


TEMPLATE, INSTANCE = rich_pair()
FREE = sorted(k for k in INSTANCE["spec"]["variables"] if not k.startswith("jupyternetes."))


def with_values(values: list[str]) -> dict:
    variables = dict(INSTANCE["spec"]["variables"]) | dict(zip(FREE, values, strict=True))
    return INSTANCE | {"spec": INSTANCE["spec"] | {"variables": variables}}


def substitute(node: Any, values: list[str], names: dict[str, str]) -> Any:
    """What the random render must be: the sentinel render with each sentinel replaced once."""
    if isinstance(node, str):
        return names.get(node) or SENTINEL.sub(lambda m: values[int(m[1])], node)
    if isinstance(node, dict):
        return {substitute(k, values, {}): substitute(v, values, names) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values, names) for v in node]
    return node


@FAST
@given(values=st.lists(VALUES, min_size=len(FREE), max_size=len(FREE)))
def test_random_values_never_change_structure_of_the_rich_example(values):
    assume(values[FREE.index("node.pool.label")] != "kubernetes.io/os")  # a real key clash
    plain = render(TEMPLATE, with_values([f"plain{i}" for i in range(len(FREE))]))
    sentinel = render(TEMPLATE, with_values([f"@@V{i}@@" for i in range(len(FREE))]))
    got = render(TEMPLATE, with_values(values))
    names = {s.name: g.name for s, g in zip(sentinel.items, got.items, strict=True)}
    for p, s, g in zip(plain.items, sentinel.items, got.items, strict=True):
        assert shape(g.manifest) == shape(p.manifest)
        assert is_dns_label(g.name)
        assert g.manifest == substitute(s.manifest, values, names)


# --- slugs -----------------------------------------------------------------------------------

DNS_LABELS = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@FAST
@given(raw=st.text(), max_length=st.integers(12, 63))
def test_safe_name_always_valid_and_deterministic(raw, max_length):
    out = safe_name(raw, max_length)
    assert is_dns_label(out) and len(out) <= max_length
    assert out == safe_name(raw, max_length)


@FAST
@given(raw=st.text())
def test_safe_name_hash_is_of_the_original(raw):
    out = safe_name(raw)
    if out != raw:
        assert out.endswith("---" + hashlib.sha256(raw.encode()).hexdigest()[:8])


@FAST
@given(name=DNS_LABELS)
def test_valid_names_without_double_dash_are_kept(name):
    assume("--" not in name)
    assert safe_name(name) == name


@FAST
@given(a=st.text(), b=st.text())
def test_safe_name_distinct_inputs_give_distinct_outputs(a, b):
    assume(a != b)
    assert safe_name(a) != safe_name(b)


@FAST
@given(a=st.text(), b=st.text())
def test_safe_label_value_valid_and_distinct(a, b):
    assume(a != b)
    assert is_label_value(safe_label_value(a))
    assert safe_label_value(a) != safe_label_value(b)


@FAST
@given(a=st.text(alphabet="aA.-_@ ", max_size=8), b=st.text(alphabet="aA.-_@ ", max_size=8))
def test_similar_names_never_collapse(a, b):
    # A tiny alphabet makes equal readable prefixes common: only the hash keeps them apart.
    assume(a != b)
    assert safe_name(a) != safe_name(b)
