"""shard.py: the instance -> shard map, what else a shard owns, and the --shard option."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from typer.testing import CliRunner

from jupyternetes_ssa import FIELD_MANAGER, labels
from jupyternetes_ssa.cli import app
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.ownership import OWNER
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import (
    MAX_SHARDS,
    BadShard,
    Shard,
    configuration_leases,
    handover_lease,
    instance_key,
    lease_name,
    parse,
    shard_of,
)


def pod(namespace: str, instance: str, record: str | None = None) -> dict:
    """An object of ours for `instance`, with its owner record unless `record` says otherwise."""
    annotations = {OWNER: record if record is not None else f"{namespace}/{instance}/uid-1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{instance}-notebook"[:63],
            "namespace": namespace,
            "labels": {
                labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                labels.INSTANCE: safe_label_value(instance),
            },
            "annotations": annotations if record != "" else {},
            "managedFields": [{"manager": FIELD_MANAGER}],
        },
    }


def test_the_hash_is_sha256_of_namespace_slash_name_and_does_not_depend_on_the_process():
    digest = hashlib.sha256(b"jhub/8dc366d8a0f05869bfdb6e7eb3d83f65").digest()
    expected = int.from_bytes(digest[:8], "big")
    for count in (1, 2, 3, 7, 256):
        assert shard_of("jhub", "8dc366d8a0f05869bfdb6e7eb3d83f65", count) == expected % count
    assert shard_of("jhub", "jovyan", 3) == 1  # pinned: a change would move every server


def test_every_instance_is_served_by_exactly_one_shard_and_the_split_is_about_even():
    names = [(f"ns{i % 7}", f"user-{i}") for i in range(9000)]
    for count in (1, 2, 3, 5):
        shards = [Shard(i, count) for i in range(count)]
        per_shard = Counter()
        for ns, name in names:
            owners = [s.index for s in shards if s.owns(ns, name)]
            assert len(owners) == 1, (ns, name, owners)
            per_shard[owners[0]] += 1
        fair = len(names) / count
        assert all(abs(n - fair) < 0.06 * fair for n in per_shard.values()), per_shard


def test_the_namespace_is_part_of_the_key_and_the_separator_keeps_pairs_apart():
    """Same name in two namespaces: two instances, each placed on its own; and ("a-b", "c")
    is not ("a", "b-c") (names cannot contain "/", so the joined key is unambiguous)."""
    counts = Counter(shard_of(f"team-{i}", "jovyan", 4) for i in range(400))
    assert len(counts) == 4, "the same name in other namespaces lands on every shard"
    pairs = [(f"a-{i}", "c") for i in range(200)] + [("a", f"{i}-c") for i in range(200)]
    assert len({shard_of(ns, n, 2**31) for ns, n in pairs}) > 390


def test_an_object_belongs_to_the_shard_of_the_instance_its_owner_record_names():
    shards = [Shard(i, 3) for i in range(3)]
    for i in range(60):
        name = f"user-{i}"
        mine = shard_of("jhub", name, 3)
        obj = pod("jhub", name)
        assert [s.index for s in shards if s.owns_object(obj)] == [mine]
        orphan = pod("jhub", name, record=f"jhub/{name}/uid-of-a-deleted-incarnation")
        assert [s.index for s in shards if s.owns_object(orphan)] == [mine]


def test_an_object_without_owner_record_goes_by_its_label_only_when_the_label_is_the_name():
    plain = pod("jhub", "jovyan", record="")
    assert instance_key(plain) == ("jhub", "jovyan")
    long_name = "a" * 80  # its label is a hashed slug: whose it is cannot be read back
    slugged = pod("jhub", long_name, record="")
    assert "--" in slugged["metadata"]["labels"][labels.INSTANCE]
    assert instance_key(slugged) is None
    assert not any(Shard(i, 2).owns_object(slugged) for i in range(2)), "no shard touches it"
    assert Shard().owns_object(slugged), "unsharded, everything of ours is in the picture"
    assert instance_key(pod("jhub", long_name)) == ("jhub", long_name), "with a record it is known"


def test_a_forged_owner_record_that_disagrees_with_the_labels_is_not_believed():
    """Someone copies another instance's record onto an object labelled for "mallory": the
    record disagrees with the labels, so the labels decide (as garbage collection reads it)."""
    forged = pod("jhub", "mallory", record="jhub/alice/uid-a")
    assert instance_key(forged) == ("jhub", "mallory")
    other_namespace = pod("jhub", "mallory", record="kube-system/mallory/uid")
    assert instance_key(other_namespace) == ("jhub", "mallory")


@pytest.mark.parametrize(
    ("text", "index", "count"), [("0/1", 0, 1), ("1/2", 1, 2), (" 2/3 ", 2, 3), ("0/256", 0, 256)]
)
def test_parse_accepts_i_of_n(text: str, index: int, count: int):
    assert parse(text) == Shard(index, count)


@pytest.mark.parametrize(
    "text",
    [
        *("", "1", "2/2", "3/2", "0/0", "-1/2", "1/-2", "a/b", "1/2/3"),
        *("\u0661/\u0662", "0/257", "1.0/2", "0x1/2"),  # Arabic-Indic digits are digits too
    ],
)
def test_parse_refuses_anything_else_naming_the_option_and_the_fix(text: str):
    with pytest.raises(BadShard) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith(f"--shard {text!r}")
    assert f"0 <= I < N <= {MAX_SHARDS}" in message and "--shard 0/2" in message


def test_a_shard_that_does_not_exist_cannot_be_built():
    with pytest.raises(BadShard):
        Shard(2, 2)


def test_leases_each_shard_its_own_and_no_sharding_keeps_its_name():
    assert lease_name("jupyternetes-ssa", Shard()) == "jupyternetes-ssa"
    assert lease_name("jupyternetes-ssa", Shard(1, 3)) == "jupyternetes-ssa-1-of-3"
    assert configuration_leases("x", 1) == ["x"]
    assert configuration_leases("x", 2) == ["x-0-of-2", "x-1-of-2"]
    assert handover_lease("x") == "x-shards"
    assert Settings().shard == Shard(0, 1) and not Settings().shard.sharded


@pytest.mark.parametrize("value", ["2/2", "one/two", "-1/3"])
def test_a_bad_shard_option_is_one_line_exit_2_and_no_traceback(value: str):
    result = CliRunner().invoke(app, ["reconcile", "--once", "--shard", value])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --shard"), result.output
    assert "Traceback" not in result.output
