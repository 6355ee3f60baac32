"""safe_name / safe_label_value: kubespawner's safe-slug scheme on DNS-1123 labels."""

from __future__ import annotations

import hashlib

import pytest

from jupyternetes_ssa.names import is_dns_label, is_label_value, safe_label_value, safe_name


def sha8(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    "name",
    ["a", "0", "8dc366d8a0f05869bfdb6e7eb3d83f65-workspace", "a-b", "x" * 63, "1abc"],
)
def test_is_dns_label_accepts(name):
    assert is_dns_label(name)


@pytest.mark.parametrize(
    "name",
    ["", "A", "a_b", "a.b", "-a", "a-", "x" * 64, "abc\n", " abc", "é", None, 12],
)
def test_is_dns_label_rejects(name):
    assert not is_dns_label(name)


@pytest.mark.parametrize("value", ["", "a", "Default_Template.v1", "A-b.c_D", "9" * 63])
def test_is_label_value_accepts(value):
    assert is_label_value(value)


@pytest.mark.parametrize("value", ["-a", "a.", "_a", "a b", "a/b", "x" * 64, None])
def test_is_label_value_rejects(value):
    assert not is_label_value(value)


def test_valid_name_kept_unchanged():
    assert safe_name("8dc366d8a0f05869bfdb6e7eb3d83f65-workspace") == (
        "8dc366d8a0f05869bfdb6e7eb3d83f65-workspace"
    )
    assert safe_name("x" * 63) == "x" * 63


def test_invalid_name_is_lowered_dashed_and_hashed():
    raw = "home-Alice.Smith@Example.org"
    assert safe_name(raw) == f"home-alice-smith-example-org---{sha8(raw)}"


def test_runs_of_bad_characters_become_one_dash_and_ends_are_stripped():
    raw = "__Foo!!__bar__"
    assert safe_name(raw) == f"foo-bar---{sha8(raw)}"


def test_hash_is_of_the_original_string():
    # Same readable prefix, different originals: the hash keeps them apart.
    assert safe_name("A.b") != safe_name("a_b")
    assert safe_name("A.b").startswith("a-b---")
    assert safe_name("Foo") == f"foo---{sha8('Foo')}" != safe_name("foo") == "foo"


def test_long_name_truncated_to_63_with_hash():
    raw = "a" * 100
    out = safe_name(raw)
    assert len(out) == 63
    assert out == "a" * 52 + "---" + sha8(raw)
    assert is_dns_label(out)


def test_truncation_does_not_leave_a_trailing_dash_before_separator():
    raw = "a" * 51 + "-bcdef" + "X"
    out = safe_name(raw)
    assert out == "a" * 51 + "---" + sha8(raw)
    assert "----" not in out


def test_empty_or_all_symbols_becomes_x_plus_hash():
    assert safe_name("") == f"x---{sha8('')}"
    assert safe_name("ユーザー") == f"x---{sha8('ユーザー')}"
    assert is_dns_label(safe_name("@@@"))


def test_double_dash_names_are_hashed_so_nobody_can_claim_a_hashed_name():
    # Without kubespawner's '--' rule, a user named like someone else's hashed name
    # would get that name unchanged, and with it the victim's PVC.
    victim = safe_name("home-Bob.Smith")
    assert victim.startswith("home-bob-smith---")
    assert safe_name(victim) != victim
    assert safe_name("a--b") == f"a-b---{sha8('a--b')}"


def test_max_length_is_honoured_and_bounded():
    assert len(safe_name("Some Long Name " * 5, max_length=20)) == 20
    assert safe_name("abcdefghijklmnopqrstuvwxyz", max_length=20).endswith(
        sha8("abcdefghijklmnopqrstuvwxyz")
    )
    with pytest.raises(ValueError):
        safe_name("x", max_length=11)
    with pytest.raises(ValueError):
        safe_name("x", max_length=64)


def test_deterministic():
    assert safe_name("Hello World") == safe_name("Hello World")
    assert safe_label_value("Hello World") == safe_label_value("Hello World")


def test_safe_label_value_keeps_valid_values_including_upper_case_and_dots():
    assert safe_label_value("Default_Template.v1") == "Default_Template.v1"
    assert safe_label_value("") == ""


def test_safe_label_value_hashes_long_or_invalid_values():
    long = "t." * 40
    out = safe_label_value(long)
    assert len(out) <= 63 and is_label_value(out)
    assert out.endswith(sha8(long))
    assert safe_label_value("-x") == f"x---{sha8('-x')}"
    assert safe_label_value("a--b") != "a--b"
