"""Continuous mode: informers feed a work queue of instance keys; workers run `reconcile_instance`.

Watch handlers only map an event to the instance(s) it concerns: an instance's own spec change,
every instance using a changed template, the instance owning a changed pod, PVC or warning event,
the instances of a namespace whose labels changed (watched only once a template grants by
namespace selector, see tenancy.py).
A periodic resync re-queues everything and garbage-collects across the whole cache.
With `--shard I/N` the caches hold only this shard's instances, objects and pod events (shard.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import defaultdict

from jupyternetes_ssa import events, labels
from jupyternetes_ssa.errors import BadSettings
from jupyternetes_ssa.health import Metrics, serve
from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import (
    EVENT,
    INSTANCE,
    NAMESPACE,
    POD,
    TEMPLATE,
    ApiError,
    Kube,
    Resource,
)
from jupyternetes_ssa.leader import LeaderElector, LostLeadership
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.observe import (
    POD_EVENTS,
    Key,
    Observed,
    identity,
    key_of,
    owned_resources,
    owned_selector,
    template_scope,
)
from jupyternetes_ssa.prune import Wanted, plan_prune, prune
from jupyternetes_ssa.queue import WorkQueue
from jupyternetes_ssa.reconcile import reconcile_instance
from jupyternetes_ssa.relabel import strays, sweep
from jupyternetes_ssa.settings import Settings
from jupyternetes_ssa.status import needs_write, urgent
from jupyternetes_ssa.tenancy import template_key, uses_selector
from jupyternetes_ssa.tokens import prepare
from jupyternetes_ssa.types import InstanceResult, Manifest, PruneCandidate

log = logging.getLogger(__name__)
UNHEALTHY_AFTER_SECONDS = 120.0  # a watch failing this long makes /healthz fail
MAX_STATUS_INTERVAL = 60.0  # progress is written at least this often while it changes


def _spec_changed(new: Manifest, old: Manifest | None) -> bool:
    """An instance event worth a reconcile: not just our own status write."""
    if old is None:
        return True
    n, o = new["metadata"], old["metadata"]
    return any(
        n.get(f) != o.get(f)
        for f in ("generation", "labels", "annotations", "deletionTimestamp", "uid")
    )


def _version(obj: Manifest) -> str | None:
    return obj["metadata"].get("resourceVersion")


def _labels(obj: Manifest) -> dict:
    return obj["metadata"].get("labels") or {}


class Controller:
    def __init__(self, kube: Kube, settings: Settings):
        self.s = settings
        self.observed = Observed()
        self.queue = WorkQueue(settings.backoff_base, settings.backoff_max)
        self.metrics = Metrics()
        self.wanted: Wanted = {}
        self.by_label: dict[tuple[str, str], Key] = {}
        # (namespace, instance label value) -> our objects carrying it: a reconcile's prune
        # looks at its own instance's objects, not at every object in the cache.
        self.members: dict[tuple[str, str], set[tuple[str, Key]]] = defaultdict(set)
        self.elector = LeaderElector(kube, settings) if settings.leader_elect else None
        self.kube = kube if self.elector is None else kube.fenced(self.elector.may_write)
        self.tasks: list[asyncio.Task] = []  # what must run for as long as we do
        self.owned: list[Resource] = []  # the kinds of ours, known once run() starts
        self._event_cache: dict[Key, Manifest] = {}
        # when (monotonic) each instance's status was last written, or its first one held back
        self._status_clock: dict[Key, float] = {}
        self._status_streak: dict[Key, int] = {}  # progress writes since the last verdict
        # progress due, held once while others wait: False while held, True once released
        self._status_held: dict[Key, bool] = {}
        # events about an instance's objects seen during its pass, and what that pass wrote:
        # judged when it ends (_settle_events)
        self._during: dict[Key, set[tuple]] = {}
        self._written: dict[Key, set[tuple]] = {}
        self.informers: list[Informer] = []  # built in run(), once the owned kinds are known
        self.namespace_informer: Informer | None = None  # started by the first selector grant
        self._namespaces_asked: asyncio.Task | None = None  # may we? (asked before watching)
        self.metrics.queue_depth.set_function(lambda: len(self.queue))
        self.metrics.instances.set_function(lambda: len(self.observed.instances))
        self.metrics.leader.set_function(lambda: 1 if self.leading else 0)

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def _informers(self, owned: list[Resource], managed: str) -> list[Informer]:
        s, o = self.s, self.observed
        kw = {"timeout_seconds": s.watch_timeout_seconds}
        o.owned = {res.kind_key: {} for res in owned}
        return [
            Informer(
                self.kube,
                INSTANCE,
                s.namespaces,
                o.instances,
                self._on_instance,
                keep=s.shard.owns_instance,
                **kw,
            ),
            Informer(self.kube, TEMPLATE, template_scope(s), o.templates, self._on_template, **kw),
            *(
                Informer(
                    self.kube,
                    res,
                    s.namespaces,
                    o.owned[res.kind_key],
                    self._on_owned,
                    label_selector=managed,
                    keep=s.shard.owns_object,
                    **kw,
                )
                for res in owned
            ),
            Informer(
                self.kube,
                EVENT,
                s.namespaces,
                self._event_cache,
                self._on_event,
                field_selector=POD_EVENTS,
                keep=self._about_our_pod,
                **kw,
            ),
        ]

    def _watched_past(self, obj: Manifest) -> bool:
        """Whether the watch of the object's kind is past this version of it: an answer to our
        own write that arrives after the watch removed the object must not bring it back."""
        meta, key = obj["metadata"], identity(obj)[0]
        for informer in self.informers:
            if informer.res.kind_key == key:
                return informer.delivered_past(
                    meta.get("namespace", ""), meta.get("resourceVersion", "")
                )
        return False

    def _about_our_pod(self, event: Manifest) -> bool:
        """A shard keeps the events of its own pods (listed first: see _run_informer)."""
        involved = event.get("involvedObject", {})
        pod = (involved.get("namespace", ""), involved.get("name", ""))
        return not self.s.shard.sharded or pod in self.observed.pods

    async def _run_informer(self, informer: Informer) -> None:
        """Run an informer; a shard's events once its pods are listed (they decide which)."""
        if informer.res is EVENT and self.s.shard.sharded:
            pods = next(i for i in self.informers if i.res is POD)
            while not pods.listed:
                await asyncio.sleep(0.1)
        await informer.run()

    def synced(self) -> bool:
        """Every cache listed; namespaces too once watched (unless reading them is refused or
        fails: then selector grants are refused, and nothing else waits for them)."""
        core = bool(self.informers) and all(i.synced for i in self.informers)
        return core and not self._namespaces_pending()

    def _namespaces_pending(self) -> bool:
        """Namespace labels are on their way: first asked for or listed, without error yet."""
        ns, asked = self.namespace_informer, self._namespaces_asked
        if ns is not None:
            return not ns.listed and ns.last_error is None
        return asked is not None and not asked.done()

    def healthy(self) -> bool:
        """For /healthz: every background task still runs and no watch has failed for long."""
        return not any(t.done() for t in self.tasks) and not any(
            i.failing_for() > UNHEALTHY_AFTER_SECONDS for i in self.informers
        )

    # --- event handlers: map an event to instance keys --------------------------------------
    def _on_instance(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        key = key_of(obj)
        label_key = (key[0], safe_label_value(key[1]))
        if kind == "DELETED":
            self.by_label.pop(label_key, None)
        else:
            self.by_label[label_key] = key
        if kind == "DELETED" or _spec_changed(obj, old):
            self.queue.add(key)

    def _on_template(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        if kind != "DELETED" and uses_selector(obj):
            self._watch_namespaces()
        if old is not None and kind != "DELETED" and obj.get("spec") == old.get("spec"):
            return
        tkey = key_of(obj)
        for key, instance in self.observed.instances.items():
            if template_key(instance) == tkey:
                self.queue.add(key)

    def _watch_namespaces(self) -> None:
        if self.namespace_informer is None and self._namespaces_asked is None:
            self._namespaces_asked = asyncio.create_task(self._start_namespace_informer())

    def _namespaces_refused(self) -> bool:
        asked = self._namespaces_asked
        return self.namespace_informer is None and asked is not None and asked.done()

    async def _start_namespace_informer(self) -> None:
        """Watch namespaces if allowed; if not, selector grants are refused (asked again at
        each resync, so rights granted later are noticed)."""
        try:
            allowed = all([await self.kube.allowed(v, NAMESPACE) for v in ("list", "watch")])
        except ApiError as err:
            allowed, why = False, str(err)
        else:
            why = "no list and watch on namespaces"
        if not allowed:
            log.warning("namespace labels unavailable (%s): selector grants are refused", why)
            return
        self.namespace_informer = Informer(
            self.kube,
            NAMESPACE,
            (),
            self.observed.namespaces,
            self._on_namespace,
            timeout_seconds=self.s.watch_timeout_seconds,
        )
        self.tasks.append(
            asyncio.create_task(self.namespace_informer.run(), name="informer Namespace")
        )

    def _on_namespace(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        """A grant by selector may start or stop holding: re-queue the namespace's instances
        that use a template of another namespace."""
        if kind != "DELETED" and old is not None and _labels(obj) == _labels(old):
            return
        name = obj["metadata"]["name"]
        for key, instance in self.observed.instances.items():
            if key[0] == name and template_key(instance)[0] != name:
                self.queue.add(key)

    def _owner_of(self, obj: Manifest) -> Key | None:
        return self.by_label.get(labels.instance_of(obj))

    def _on_owned(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        members = self.members[labels.instance_of(obj)]
        if kind == "DELETED":
            members.discard(identity(obj))
            self.observed.refused.pop((obj.get("kind"), key_of(obj)), None)
        else:
            members.add(identity(obj))
            if old is not None and _version(old) == _version(obj):
                return  # our own write, already remembered from its answer: nothing new
        if (owner := self._owner_of(obj)) is None:
            return
        if self.queue.active(owner):  # judged once its pass ends: maybe only its own write
            self._during.setdefault(owner, set()).add((kind, identity(obj), _version(obj)))
        else:
            self.queue.nudge(owner)

    def _settle_events(self, key: Key) -> None:
        """Its pass is over: events about its objects that showed only what the pass wrote
        itself (the watch of a created PVC often delivers before the pod's apply returns) are
        nothing new; any other event (a deletion, someone else's write) queues it again."""
        seen, written = self._during.pop(key, ()), self._written.pop(key, set())
        if any(kind == "DELETED" or (ident, rv) not in written for kind, ident, rv in seen):
            self.queue.again(key)  # not nudge: a status timer this pass set may be a minute off

    @staticmethod
    def _written_by(result: InstanceResult) -> set[tuple]:
        """(identity, resourceVersion) of every object as the pass left or found it."""
        return {(identity(o.live), _version(o.live)) for o in result.outcomes if o.live}

    def _on_event(self, kind: str, event: Manifest, old: Manifest | None) -> None:
        if kind == "DELETED":
            self.observed.remove_event(event)
            return
        self.observed.add_event(event)
        involved = event.get("involvedObject", {})
        pod = self.observed.pods.get((involved.get("namespace", ""), involved.get("name", "")))
        if pod is not None and (owner := self._owner_of(pod)) is not None:
            self.queue.nudge(owner)

    # --- work --------------------------------------------------------------------------------
    def _objects_of(self, key: Key) -> list[Manifest]:
        stores = self.observed.owned
        ids = self.members.get((key[0], safe_label_value(key[1])), set())
        return [obj for kind, k in ids if (obj := stores.get(kind, {}).get(k)) is not None]

    def _labels_pending(self, instance: Manifest) -> bool:
        """A cross-namespace instance while the namespaces are first being listed."""
        return self._namespaces_pending() and template_key(instance)[0] != key_of(instance)[0]

    async def _prune(self, only: Key | None = None) -> None:
        self.observed.complete = self.synced()
        objects = None if only is None else self._objects_of(only)
        candidates = [
            cand
            for cand in plan_prune(self.observed, self.wanted, objects)
            if cand.orphan_of is None or not cand.allowed or await self._really_gone(cand)
        ]
        pruned = await prune(
            self.kube, candidates, dry_run=self.s.dry_run, concurrency=self.s.gc_concurrency
        )
        for cand in pruned:
            log.info("pruned %s: %s", cand.ref, cand.reason)
            self.metrics.pruned.labels(cand.ref.kind).inc()
        if not self.s.dry_run:
            await events.record_pruned(self.kube, pruned, self.observed.instances)

    async def _really_gone(self, cand: PruneCandidate) -> bool:
        """Watches lag, each at its own pace: an object is deleted as an orphan only once the
        instance watch has delivered past the object's own version (its instance's deletion
        was seen, not merely not yet its creation), else after asking the apiserver (a read,
        and only for orphans)."""
        instances = self.informers[0] if self.informers else None
        if instances is not None and instances.delivered_past(
            cand.ref.namespace, cand.resource_version
        ):
            return True
        return await self.kube.get(INSTANCE, *cand.orphan_of) is None

    async def _process(self, key: Key) -> bool:
        """Reconcile one key; True when it failed (retry with backoff)."""
        instance = self.observed.instances.get(key)
        if instance is None:
            for obj in self._objects_of(key):  # refusals of what it no longer wants
                self.observed.refused.pop((obj.get("kind"), key_of(obj)), None)
            self.wanted.pop(key, None)
            self._status_clock.pop(key, None)
            self._status_streak.pop(key, None)
            self._status_held.pop(key, None)
            await self._prune(only=key)
            return False
        ns = self.namespace_informer
        self.observed.namespaces_known = ns is not None and ns.listed
        if self._labels_pending(instance):
            return True  # a grant may need labels still being listed: retry shortly
        started = time.monotonic()
        result, want = await reconcile_instance(
            self.kube, self.observed, instance, self.s, self._pace_status
        )
        self.metrics.duration.observe(time.monotonic() - started)
        if self._status_held.get(key):  # released: this pass wrote it, or had none to write
            del self._status_held[key]
        self.wanted[key] = want
        self._written[key] = self._written_by(result)
        for outcome in result.outcomes:
            self.metrics.applies.labels(outcome.action).inc()
        if result.status_written:
            self.metrics.status_writes.inc()
            self._status_clock[key] = time.monotonic()
        if result.status_due:
            self.queue.add_after(key, result.status_due)
        self.metrics.reconciles.labels("error" if result.error else "ok").inc()
        if result.error:
            self.metrics.errors.labels(result.reason or "Error").inc()
        if want is not None:
            await self._prune(only=key)
        return bool(result.error)

    def _pace_status(self, instance: Manifest, status: dict) -> float:
        """A starting pod moves on every few hundred milliseconds (created, scheduled, pulled,
        started): a verdict (Ready, an error, a state) is written at once; progress waits
        --status-interval after the last write, twice that after a second progress write, and
        so on up to a minute, so a slow start (a volume bound with backoff, an image pulled)
        costs a few writes, not one per step. A start's first status ("pending") is progress
        too: a start that runs within the interval costs one status write, and a burst of
        starts reaches its pods as fast as a plain create loop. Progress falling due while
        other instances wait in the queue is held once more, until the queue runs dry or one
        more interval has passed: in a burst, the pods first, then the statuses."""
        key = key_of(instance)
        if not needs_write(instance, status) or urgent(instance, status):
            self._status_streak[key] = 0
            self._status_held.pop(key, None)
            return 0.0
        now = time.monotonic()
        since = self._status_clock.setdefault(key, now)
        streak = self._status_streak.get(key, 0)
        wait = min(MAX_STATUS_INTERVAL, self.s.status_interval_seconds * 2**streak)
        due = max(0.0, since + wait - now)
        if due == 0.0 and key not in self._status_held and len(self.queue):
            self._status_held[key] = False  # others wait: their pods first (_release_held)
            return self.s.status_interval_seconds
        if due == 0.0:
            self._status_held.pop(key, None)
            self._status_streak[key] = streak + 1
        return due

    def _release_held(self) -> None:
        """The queue ran dry: the progress writes held back while it was busy go now (each
        was held once, for at most one more interval; the next pass writes it). Each is queued
        once: a pass that writes no status (an instance being deleted) must not bring it back
        every time the queue runs dry."""
        if not len(self.queue):
            for key, released in self._status_held.items():
                if not released:
                    self._status_held[key] = True
                    self.queue.add(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                failed = await self._process(key)
            except Exception:
                log.exception("reconciling %s/%s failed", *key)
                failed = True
            self._settle_events(key)
            self.queue.done(key, failed=failed)
            self._release_held()

    async def _resync(self) -> None:
        """Collect what was orphaned while no replica ran, then every resync period re-queue
        everything and collect again."""
        while True:
            if self.synced():
                try:
                    await self._prune()
                except ApiError as err:  # e.g. a 403: say so, and try again at the next resync
                    log.error("garbage collection failed: %s", err)
            await asyncio.sleep(self.s.resync_seconds)
            try:  # objects moved out of this shard's buckets by hand come back into sight
                await sweep(self.kube, self.s, self.owned)
            except ApiError as err:
                log.error("looking for objects outside this shard's buckets failed: %s", err)
            for key in list(self.observed.instances):
                self.queue.add(key)
            if self._namespaces_refused() and any(
                uses_selector(t) for t in self.observed.templates.values()
            ):
                self._namespaces_asked = None  # ask again
                self._watch_namespaces()

    async def _wait_synced(self) -> None:
        while not self.synced():
            await asyncio.sleep(0.1)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set (exit 0) or leadership is lost (exit 1)."""
        await prepare(
            self.kube, self.observed.sealing, self.s.key_namespace, create=not self.s.dry_run
        )
        self.owned = owned = await owned_resources(self.kube, self.s)
        selector = await owned_selector(self.kube, self.s, owned)
        self.informers = self._informers(owned, selector)
        self.observed.watched_past = self._watched_past
        if selector != labels.MANAGED_SELECTOR:  # what this shard's selection hides from it
            self.observed.strays_of = lambda value: strays(self.kube, self.s, owned, value)
        tasks = self.tasks
        tasks += [
            asyncio.create_task(self._run_informer(i), name=f"informer {i.res.kind}")
            for i in self.informers
        ]
        server = None
        if self.s.health_port:
            server = await serve(
                self.s.health_host, self.s.health_port, self.synced, self.metrics, self.healthy
            )
        code = 0
        try:
            code = await self._lead(stop, tasks)
        finally:
            running = [*tasks, *filter(None, [self._namespaces_asked])]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if self.elector:
                await self.elector.release()
            if server:
                server.close()
        return code

    async def _lead(self, stop: asyncio.Event, tasks: list[asyncio.Task]) -> int:
        """Wait for leadership and synced caches, start the workers, and return when told to
        stop (0) or when anything that must run forever has ended (1, with its cause logged)."""
        stopping = asyncio.create_task(stop.wait())
        if self.elector:
            acquiring = asyncio.create_task(self.elector.acquire())
            await asyncio.wait({acquiring, stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() or not acquiring.done():
                acquiring.cancel()
                return 0 if stop.is_set() else _failed(tasks)
            tasks.append(asyncio.create_task(self.elector.hold(), name="lease renewal"))
        synced = asyncio.create_task(self._wait_synced())
        await asyncio.wait({synced, stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():
            synced.cancel()
            return 0 if stop.is_set() else _failed(tasks)
        log.info(
            "caches synced: %d instances%s; reconciling",
            len(self.observed.instances),
            f" of shard {self.s.shard}" if self.s.shard.sharded else "",
        )
        tasks += [
            asyncio.create_task(self._worker(), name=f"worker {n}")
            for n in range(self.s.concurrency)
        ]
        tasks.append(asyncio.create_task(self._resync(), name="resync"))
        await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        return 0 if stop.is_set() else _failed(tasks)


def _failed(tasks: list[asyncio.Task]) -> int:
    """Log why a task that should run forever ended; the process then exits 1 to be restarted."""
    for task in tasks:
        if not task.done() or task.cancelled():
            continue
        err = task.exception()
        if isinstance(err, LostLeadership):
            log.error("%s; exiting so that another replica takes over", err)
        elif err is not None:
            log.error("%s failed; exiting", task.get_name(), exc_info=err)
        else:
            log.error("%s ended unexpectedly; exiting", task.get_name())
    return 1


async def run_controller(kubeconfig: str | None, context: str | None, settings: Settings) -> int:
    kube = await Kube.connect(kubeconfig=kubeconfig, context=context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Controller(kube, settings).run(stop)
    except BadSettings as err:
        log.error("%s", err)
        return 2
    finally:
        await kube.close()
