"""Two shard configurations never write at once: a handshake over Leases, for `--shard I/N`.

Shard I of N leads on its own Lease `<lease>-I-of-N` (shard.py). When N changes (a rollout from 2
to 3 shards, where old and new pods overlap), the instance -> shard map changes, so shards of the
old and of the new N could serve one instance twice. One more Lease, `<lease>-shards`, names the
configuration (N) whose shards may write, and the one named before it:

- A shard takes or renews its own Lease only while its N is named. A shard of another N holds no
  Lease (so a configuration never waits for one that waits for it: no deadlock) and stays ready:
  its caches are warm, and a rollout proceeds.
- It names its own N (compare-and-swap on the Lease's resourceVersion: one configuration wins)
  only once every Lease of the named configuration and of the one before it is gone: absent,
  handed back, or unchanged for its lease duration by our clock (leader.py's rule). Without a
  name yet, the named configuration is the unsharded reconciler's (its Lease `<lease>`).
- A shard of the newly named N writes only once every Lease of the configuration before it is
  gone, observed after the name changed: a shard of the old N that renewed just before the
  change, having read the old name, stops at its write fence (renew deadline) before that.
- A leading shard re-reads the name after each renewal; once another N is named it stops writing
  at once, hands its Lease back and exits (to be restarted as a waiting shard).

Costs a few GETs of Leases per retry period per shard, nothing per object. The unsharded
reconciler (no --shard) takes no part: its behaviour and rights are unchanged; going back to it
means stopping every shard first (README, "Sharding").
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from jupyternetes_ssa.kube import LEASE, ApiError, Kube
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import configuration_leases, handover_lease
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)

NAMED = "jupyternetes-ssa.kadense.io/shards"
PREVIOUS = "jupyternetes-ssa.kadense.io/previous-shards"
Standing = Literal["active", "waiting", "replaced"]


def _count(value: str | None) -> int:
    return int(value) if value and value.isdigit() and int(value) > 0 else 1


def _named(lease: Manifest | None) -> tuple[int, int]:
    """(N named, N named before it); nothing named yet: the unsharded reconciler (1, 1)."""
    annotations = (lease or {}).get("metadata", {}).get("annotations") or {}
    return _count(annotations.get(NAMED)), _count(annotations.get(PREVIOUS))


class Handover:
    def __init__(self, kube: Kube, settings: Settings):
        self.kube, self.s = kube, settings
        self.count = settings.shard.count
        self.name = handover_lease(settings.lease_name)
        self._seen: dict[str, tuple[str, float]] = {}  # Lease -> (record, when it changed)
        self._confirmed: str | None = None  # the naming whose previous configuration is gone

    async def _read(self) -> Manifest | None:
        return await self.kube.get(LEASE, self.s.lease_namespace, self.name)

    async def may_lead(self) -> bool:
        """Before taking our own Lease: our N is named, or we just named it."""
        lease = await self._read()
        named, previous = _named(lease)
        if named == self.count:
            return True
        if not (await self._gone(named) and await self._gone(previous)):
            return False
        return await self._name_ours(lease, named)

    async def standing(self) -> Standing:
        """After taking or renewing our own Lease: may we write? (The previous configuration is
        checked once per naming: the Lease changes only when a configuration is named.)"""
        lease = await self._read()
        named, previous = _named(lease)
        if named != self.count:
            return "replaced"
        naming = (lease or {}).get("metadata", {}).get("resourceVersion", "")
        if self._confirmed != naming and (previous == self.count or await self._gone(previous)):
            self._confirmed = naming
        return "active" if self._confirmed == naming else "waiting"

    async def _gone(self, count: int) -> bool:
        """No shard of configuration `count` can be writing any more."""
        names = configuration_leases(self.s.lease_name, count)
        ns = self.s.lease_namespace
        leases = await asyncio.gather(*(self.kube.get(LEASE, ns, name) for name in names))
        return all([self._expired(name, lease) for name, lease in zip(names, leases, strict=True)])

    def _expired(self, name: str, lease: Manifest | None) -> bool:
        """Absent, handed back, or unchanged for its duration since we first saw it so."""
        spec = (lease or {}).get("spec") or {}
        record = "absent" if lease is None else str(spec)
        seen = self._seen.get(name)
        if seen is None or seen[0] != record:
            self._seen[name] = (record, time.monotonic())
        if lease is None or not spec.get("holderIdentity"):
            return True
        duration = spec.get("leaseDurationSeconds") or self.s.lease_duration_seconds
        return time.monotonic() - self._seen[name][1] > duration

    async def _name_ours(self, lease: Manifest | None, named: int) -> bool:
        """Compare-and-swap the name to our N; False if another shard changed it first."""
        annotations = {NAMED: str(self.count), PREVIOUS: str(named)}
        holder = {"holderIdentity": f"{self.count} shards"}  # for `kubectl get lease`
        try:
            if lease is None:
                meta = {"name": self.name, "namespace": self.s.lease_namespace}
                await self.kube.create(
                    {
                        "apiVersion": LEASE.api_version,
                        "kind": LEASE.kind,
                        "metadata": {**meta, "annotations": annotations},
                        "spec": holder,
                    }
                )
            else:  # replace: refused (409) if the Lease changed since we read it
                meta = lease["metadata"]
                meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
                lease["spec"] = {**(lease.get("spec") or {}), **holder}
                await self.kube.replace(lease)
        except ApiError as err:
            if err.status != 409:
                log.warning("shard handover: %s", err)
            return False
        log.info("shard handover: %d shards named (were %d)", self.count, named)
        return True
