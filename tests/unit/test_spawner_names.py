"""Safe forms of user and server names. The kubespawner values below were produced by
kubespawner 7.1.0's own `kubespawner/slugs.py` (with escapism 1.1.0) for the same inputs;
a run over 3000 random names of letters, digits, punctuation, unicode and emoji agreed too."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyternetes_ssa.names import is_dns_label, is_label_value
from jupyternetes_ssa.spawner_names import escape_slug, kubespawner_names, name_variables

KUBESPAWNER = [
    # (user, server) -> safe username, safe user_server, escaped username, escaped user_server
    (("alice", ""), ("alice", "alice", "alice", "alice")),
    (
        ("alice@example.com", ""),
        (
            "alice-example-com---ff8d9819",
            "alice-example-com---ff8d9819",
            "alice-40example-2ecom",
            "alice-40example-2ecom",
        ),
    ),
    (("Alice", ""), ("alice---3bc51062", "alice---3bc51062", "-41lice", "-41lice")),
    (
        ("Ünïcødé", ""),
        (
            "n-c-d---bef14f67",
            "n-c-d---bef14f67",
            "-c3-9cn-c3-afc-c3-b8d-c3-a9",
            "-c3-9cn-c3-afc-c3-b8d-c3-a9",
        ),
    ),
    (("1abc", ""), ("x-1abc---57cb980e", "x-1abc---57cb980e", "1abc", "1abc")),
    (
        ("bob", "My Server"),
        ("bob", "bob--my-server---c2d9a82f", "bob", "bob---4dy-20-53erver"),
    ),
    (
        ("alice", "x" * 70),
        ("alice", "alice--xxxxxxxxxxxxxxxxx---4c25fe00", "alice", "alice--" + "x" * 70),
    ),
    (
        ("a" * 200, ""),
        ("a" * 37 + "---c2a908d9", "aaaaaaaaaaaaaaaaa--x---0ad794ac", "a" * 200, "a" * 200),
    ),
]


@pytest.mark.parametrize(("names", "expected"), KUBESPAWNER)
def test_kubespawner_names_match_kubespawner_7(names, expected):
    got = kubespawner_names(*names)
    assert (
        got["kubespawner.safe.username"],
        got["kubespawner.safe.user_server"],
        got["kubespawner.escape.username"],
        got["kubespawner.escape.user_server"],
    ) == expected
    assert got["kubespawner.safe.pvc_name"] == f"claim-{expected[1]}"
    assert got["kubespawner.escape.pvc_name"] == f"claim-{expected[3]}"


def test_escape_scheme_examples_from_kubespawners_docs():
    assert escape_slug("user@email.com") == "user-40email-2ecom"
    assert escape_slug("Alex") == "-41lex"
    assert escape_slug("a\nb") == "a-ab"  # escapism writes no leading zero


NAMES = st.text(min_size=1, max_size=200)


@given(user=NAMES, server=st.one_of(st.just(""), NAMES))
def test_every_safe_form_is_valid_whatever_the_name(user, server):
    variables = name_variables(user, server)
    assert is_dns_label(variables["jupyterhub.user.slug"])
    assert is_label_value(variables["jupyterhub.user.label"])
    assert is_label_value(variables["jupyterhub.server.label"])
    assert server == "" or is_dns_label(variables["jupyterhub.server.slug"])
    for key in ("username", "user_server"):
        assert is_dns_label(variables[f"kubespawner.safe.{key}"])
        assert len(variables[f"kubespawner.safe.{key}"]) <= 48


@given(a=NAMES, b=NAMES)
def test_distinct_names_get_distinct_slugs(a, b):
    if a != b:
        assert (
            name_variables(a)["jupyterhub.user.slug"] != name_variables(b)["jupyterhub.user.slug"]
        )
        assert (
            name_variables(a)["jupyterhub.user.label"] != name_variables(b)["jupyterhub.user.label"]
        )
