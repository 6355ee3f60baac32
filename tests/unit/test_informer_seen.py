"""Informer.delivered_past: when an orphan's instance is known gone without asking."""

from __future__ import annotations

from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import INSTANCE


def informer(scopes: tuple[str, ...]) -> Informer:
    return Informer(None, INSTANCE, scopes, {}, lambda *_: None)  # no I/O: kube unused here


def test_a_watch_past_the_objects_version_has_delivered_its_instances_deletion() -> None:
    inf = informer(())
    assert not inf.delivered_past("ns", "10")  # nothing listed yet: ask
    inf._seen[None] = "12"
    assert inf.delivered_past("ns", "10") and inf.delivered_past("ns", "12")
    assert not inf.delivered_past("ns", "13")  # the watch lags behind the object: ask


def test_each_namespace_scope_counts_alone_and_opaque_versions_are_never_compared() -> None:
    inf = informer(("a", "b"))
    inf._seen["a"] = "50"
    assert inf.delivered_past("a", "40") and not inf.delivered_past("b", "40")
    inf._seen["b"] = "opaque-1"
    assert not inf.delivered_past("b", "1")
    assert not inf.delivered_past("a", "not-a-number")
