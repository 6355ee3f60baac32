"""Which reconciler of several (`--shard I/N`) serves an instance, and what else is its own.

A site with tens of thousands of servers runs N reconcilers; shard I serves the instances whose
`namespace/name` hashes to I, and only the objects whose owner record names such an instance
(an orphan belongs to the shard its recorded owner hashes to, so exactly one shard may collect
it). The hash is sha256, not Python's `hash()`: it must agree across processes, restarts and
releases. Pure functions, no I/O; the Lease handshake that keeps two configurations (N) from
writing at once is in handover.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from jupyternetes_ssa import labels
from jupyternetes_ssa.ownership import owner_of
from jupyternetes_ssa.types import Manifest

OPTION = "--shard"
MAX_SHARDS = 256  # a waiting shard reads every Lease of a configuration each retry period
BUCKETS = 256  # the shard-bucket label's values: a shard count that divides it selects by it
_SPEC = re.compile(r"([0-9]+)/([0-9]+)")


class BadShard(ValueError):
    """A --shard value that is not I/N with 0 <= I < N."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`; the default 0/1 is no sharding (everything is ours)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise BadShard(f"shard {self.index}/{self.count} does not exist")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def selector(self) -> str | None:
        """The label selector of this shard's objects, for the apiserver to filter with: their
        buckets (`bucket % N == I` is `hash % N == I` when N divides BUCKETS). None when
        not sharded, or when N does not divide BUCKETS (the reconciler filters alone then)."""
        if not self.sharded or BUCKETS % self.count:
            return None
        mine = ",".join(str(b) for b in range(self.index, BUCKETS, self.count))
        return f"{labels.SHARD_BUCKET} in ({mine})"

    def owns(self, namespace: str, name: str) -> bool:
        """Whether the instance `namespace/name` is served by this shard."""
        return not self.sharded or shard_of(namespace, name, self.count) == self.index

    def owns_instance(self, instance: Manifest) -> bool:
        meta = instance["metadata"]
        return self.owns(meta.get("namespace", ""), meta["name"])

    def owns_object(self, obj: Manifest) -> bool:
        """Whether an object of ours (pod, PVC, ...) is this shard's to apply to and collect."""
        if not self.sharded:
            return True
        key = instance_key(obj)
        return key is not None and self.owns(*key)


def parse(text: str) -> Shard:
    """`I/N` as typed on the command line, or BadShard saying what is wrong and the fix."""
    fix = (
        f"give {OPTION} I/N with 0 <= I < N <= {MAX_SHARDS}, e.g. {OPTION} 0/2 and "
        f"{OPTION} 1/2 for two shards"
    )
    found = _SPEC.fullmatch(text.strip())
    if found is None:
        raise BadShard(f"{OPTION} {text!r} is not I/N; {fix}")
    index, count = int(found[1]), int(found[2])
    if not 0 <= index < count <= MAX_SHARDS:
        raise BadShard(f"{OPTION} {text!r}: there is no shard {index} of {count}; {fix}")
    return Shard(index, count)


def shard_of(namespace: str, name: str, count: int) -> int:
    """The shard of `namespace/name` among `count`: stable everywhere (sha256), and about even.

    A re-shard moves about 1 - 1/N of the instances in general (plain modulo, no consistent
    hashing): a move costs no object (the new shard finds them by their owner record), only the
    new shard's first reconcile of the instance."""
    return _hash(namespace, name) % count


def bucket_of(namespace: str, name: str) -> str:
    """The shard-bucket label value of what instance `namespace/name` creates: lets a shard
    have the apiserver send it only its own pods and PVCs (Shard.selector)."""
    return str(_hash(namespace, name) % BUCKETS)


def _hash(namespace: str, name: str) -> int:
    digest = hashlib.sha256(f"{namespace}/{name}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def instance_key(obj: Manifest) -> tuple[str, str] | None:
    """The instance an object belongs to, as garbage collection reads it: its owner record, else
    (objects made before owner records existed) its instance label, if that label is the name.

    A label that is a hashed slug (it contains `--`, which a name kept as it is never does: see
    names.py) does not tell the instance's name, so no shard can know whose it is: None, and no
    shard touches it (README, "Sharding": one unsharded pass stamps owner records first)."""
    recorded = owner_of(obj)
    if recorded is not None:
        return recorded.key
    ns = obj["metadata"].get("namespace", "")
    label = (obj["metadata"].get("labels") or {}).get(labels.INSTANCE, "")
    if not label or "--" in label:
        return None
    return ns, label


def lease_name(base: str, shard: Shard) -> str:
    """Each shard its own Lease; no sharding keeps the name it always had."""
    return base if not shard.sharded else configuration_lease(base, shard.count, shard.index)


def configuration_lease(base: str, count: int, index: int) -> str:
    """The Lease of shard `index` of `count` (count 1: the unsharded reconciler's)."""
    return base if count == 1 else f"{base}-{index}-of-{count}"


def configuration_leases(base: str, count: int) -> list[str]:
    """Every Lease of one configuration (N = count)."""
    return [configuration_lease(base, count, i) for i in range(count)]


def handover_lease(base: str) -> str:
    """The Lease that names the configuration (N) whose shards may write (handover.py)."""
    return f"{base}-shards"
