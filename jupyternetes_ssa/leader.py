"""Leader election on a coordination.k8s.io Lease, as client-go does it, plus a write fence.

A lease counts as expired when its record has not changed for leaseDurationSeconds by OUR clock
(the time we last saw it change), so clock skew between replicas does not matter. Writes use the
lease's resourceVersion: two candidates can never both win.

A standby takes over at the earliest leaseDuration after the last renewal it saw. The leader's
own writes are fenced at renewDeadline (shorter) after the start of its last successful renewal:
every lease call is bounded by what is left of that deadline and never retried at length, and
`may_write` closes the door for the reconciler's writes the moment it passes, even if the process
was frozen (SIGSTOP, a stalled VM) and has not yet noticed.

With `--shard I/N`, each shard leads on its own Lease, and handover.py's handshake keeps shards of
two different N from writing at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from jupyternetes_ssa.handover import Handover
from jupyternetes_ssa.kube import LEASE, ApiError, Kube, RetryPolicy
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.shard import lease_name
from jupyternetes_ssa.types import Manifest

log = logging.getLogger(__name__)


class LostLeadership(Exception):
    pass


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, settings: Settings):
        # One attempt per call: a retry must not outlive the renew deadline.
        self.kube, self.s = kube.retrying(RetryPolicy(attempts=1)), settings
        self.name = lease_name(settings.lease_name, settings.shard)
        self.handover = Handover(self.kube, settings) if settings.shard.sharded else None
        self.is_leader = False
        self._holding = False  # our last lease attempt won (a waiting shard holds it too)
        self._stepped_down = ""  # why, when handover.py says another configuration writes
        self._seen: tuple[str, float] = ("", 0.0)  # (record we last saw, when it changed)
        self._fence = 0.0  # monotonic time until which our writes are safe

    def may_write(self) -> bool:
        """True while we lead and our last renewal is recent enough that no standby can have
        taken over yet."""
        return self.is_leader and time.monotonic() < self._fence

    def _spec(self, spec: dict, taking_over: bool) -> dict:
        now = _micro_now()
        new = dict(
            spec,
            holderIdentity=self.s.identity,
            renewTime=now,
            leaseDurationSeconds=int(self.s.lease_duration_seconds),
        )
        if taking_over:
            new["acquireTime"] = now
            new["leaseTransitions"] = spec.get("leaseTransitions", 0) + (1 if spec else 0)
        return new

    def _expired(self, lease: Manifest) -> bool:
        record = str(lease.get("spec"))
        if record != self._seen[0]:
            self._seen = (record, time.monotonic())
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds") or self.s.lease_duration_seconds
        return not spec.get("holderIdentity") or time.monotonic() - self._seen[1] > duration

    async def try_acquire_or_renew(self) -> bool:
        """One bounded attempt; on success the write fence moves to now + renew deadline."""
        started = time.monotonic()
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for may swallow a cancellation
            async with asyncio.timeout(self.s.renew_deadline_seconds / 2):
                won = await self._attempt()
        except TimeoutError:
            log.warning("leader election: the lease call timed out")
            return False
        if won:
            self._fence = started + self.s.renew_deadline_seconds
        return won

    async def _attempt(self) -> bool:
        gate = self.handover
        if gate is not None and not self.is_leader and not await gate.may_lead():
            if self._holding:
                await self._give_back()  # another shard configuration is named: hold nothing
            return False
        self._holding = await self._lease()
        if not self._holding or gate is None:
            return self._holding
        standing = await gate.standing()
        if standing == "replaced":
            self._stepped_down = f"another shard configuration is named in lease {gate.name}"
            self._fence = 0.0  # stop writing now, not at the fence
            self.is_leader = False
            await self._give_back()
        return standing == "active"

    async def _lease(self) -> bool:
        ns, name = self.s.lease_namespace, self.name
        try:
            lease = await self.kube.get(LEASE, ns, name)
            if lease is None:
                body = {
                    "apiVersion": LEASE.api_version,
                    "kind": LEASE.kind,
                    "metadata": {"name": name, "namespace": ns},
                    "spec": self._spec({}, True),
                }
                await self.kube.create(body)
                return True
            spec = lease.get("spec") or {}
            mine = spec.get("holderIdentity") == self.s.identity
            if not mine and not self._expired(lease):
                return False
            lease["spec"] = self._spec(spec, taking_over=not mine)
            await self.kube.replace(lease)
            return True
        except ApiError as err:
            if err.status != 409:
                log.warning("leader election: %s", err)
            return False

    async def acquire(self) -> None:
        while not await self.try_acquire_or_renew():
            await asyncio.sleep(self.s.retry_period_seconds)
        self.is_leader = True
        log.info(
            "became leader (%s/%s as %s)",
            self.s.lease_namespace,
            self.name,
            self.s.identity,
        )

    async def hold(self) -> None:
        """Renew every retry period; raise LostLeadership once the fence has passed."""
        while True:
            await asyncio.sleep(self.s.retry_period_seconds)
            if not await self.try_acquire_or_renew() and not self.may_write():
                self.is_leader = False
                raise LostLeadership(
                    self._stepped_down
                    or f"could not renew lease {self.name} within "
                    f"{self.s.renew_deadline_seconds:g}s"
                )

    async def release(self) -> None:
        """Hand the lease back at shutdown so a successor need not wait for it to expire."""
        if not (self.is_leader or self._holding):
            return
        self.is_leader = False
        await self._give_back()

    async def _give_back(self) -> None:
        self._holding = False
        try:
            lease = await self.kube.get(LEASE, self.s.lease_namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.s.identity:
                lease["spec"] = dict(lease["spec"], holderIdentity="", leaseDurationSeconds=1)
                await self.kube.replace(lease)
        except ApiError as err:
            log.warning("could not release the lease: %s", err)
