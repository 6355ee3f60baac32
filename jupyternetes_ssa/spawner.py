"""JupyterHub's side: a Spawner that only ever writes JupyterNotebookInstances.

The hub never creates pods or PVCs (it needs no rights on them): `start` applies the user's
instance and waits, through one shared watch on the namespace's instances, until the reconciler
reports a ready pod with an address; `stop` deletes the instance in the foreground (so it returns
once the pod is gone) and leaves the user's PVCs for the next start; `delete_forever` asks the
reconciler to purge them (`spec.purge`).

Restarts: instance names are deterministic, so `poll` finds a server the hub started but did not
save (a hub restart mid-spawn); a pod the reconciler re-created elsewhere is followed (`poll` and
`get_url` hand the hub the new address and repair the proxy route, as kubespawner's `poll` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
import weakref
from collections import defaultdict
from typing import Any

from jupyterhub.spawner import Spawner
from jupyterhub.traitlets import Callable
from tornado import web
from traitlets import Bool, Dict, Float, List, Unicode, Union, default

from jupyternetes_ssa import keys, profiles
from jupyternetes_ssa.errors import (
    KindNotAllowed,
    RenderError,
    TemplateNotAllowed,
    TemplateNotFound,
)
from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import INSTANCE, ApiError, Kube
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.profiles import Choice, ProfileError
from jupyternetes_ssa.sealing import seal
from jupyternetes_ssa.spawner_names import name_variables
from jupyternetes_ssa.types import Manifest

# Degraded reasons no waiting can cure: the spawn fails at once with the status's message.
CONFIG_ERRORS = {
    e.reason for e in (RenderError, TemplateNotFound, TemplateNotAllowed, KindNotAllowed)
}
# Reasons that keep a pod that is gone from coming back: poll ends the server.
NO_COMEBACK = CONFIG_ERRORS | {
    "NameConflict",
    "SealingKeyMissing",
    "SealingKeyUnknown",
    "SealedForAnotherInstance",
    "SealedTokenTampered",
    "SealedTokenInvalid",
    "TokenSecretConflict",
}
FATAL = NO_COMEBACK | {"ApplyFailed", "ItemFailed", "PurgeFailed"}  # for a start in progress
# How far a starting pod got, by the reason of its newest event (kubelet's and scheduler's).
STEPS = {"Scheduled": 40, "Pulling": 50, "Pulled": 60, "Created": 70, "Started": 80}
_BACKGROUND: set[asyncio.Task] = set()  # purges finishing after delete_forever returned
# The hub's clients, per event loop (the tests run several loops) and kubeconfig.
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Kube]] = (
    weakref.WeakKeyDictionary()
)
TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


class SpawnFailed(RuntimeError):
    """The server cannot start; JupyterHub shows `jupyterhub_message` to the user (API and page)."""

    @property
    def jupyterhub_message(self) -> str:
        return str(self)


def instance_name(user: str, server: str = "") -> str:
    """The original's name for the default server (uuid5 of the user name); named servers hash
    user and server joined by NUL, which no user or server name holds, so no two collide."""
    key = f"{user}\x00{server}" if server else user
    return uuid.uuid5(uuid.UUID(int=0), key).hex


class InstanceWatch:
    """One list+watch of a namespace's instances, shared by every spawner of the hub.

    Waiters take the change event for a name, check the cache, then wait: no change is missed.
    `deleted` keeps the uid of each name's last deleted instance: an instance that came and went
    before a waiter looked is told apart from one the watch has not delivered yet.
    """

    _shared: dict[tuple[int, str, str], InstanceWatch] = {}
    sync_timeout = 30.0  # seconds to wait for the first complete list

    def __init__(self, kube: Kube, namespace: str):
        self.store: dict[tuple[str, str], Manifest] = {}
        self.deleted: dict[str, str] = {}
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.informer = Informer(kube, INSTANCE, (namespace,), self.store, self._changed)
        self.namespace = namespace
        self._task = asyncio.create_task(self.informer.run())

    @classmethod
    async def get(cls, kube: Kube, kubeconfig: str, namespace: str) -> InstanceWatch:
        key = (id(asyncio.get_running_loop()), kubeconfig, namespace)
        if key not in cls._shared or cls._shared[key]._task.done():
            cls._shared[key] = cls(kube, namespace)
        watch = cls._shared[key]
        deadline = asyncio.get_running_loop().time() + cls.sync_timeout
        while not watch.informer.synced:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"jupyternetes: cannot list JupyterNotebookInstances in namespace {namespace}"
                    f" ({watch.informer.last_error}); check the hub's kubeconfig and its Role "
                    "(examples/hub-rbac.yaml)"
                )
            await asyncio.sleep(0.05)
        return watch

    def _changed(self, kind: str, obj: Manifest, old: Manifest | None) -> None:
        if kind == "DELETED":
            self.deleted[obj["metadata"]["name"]] = obj["metadata"].get("uid", "")
        event = self._events.pop(obj["metadata"]["name"], None)
        if event is not None:
            event.set()

    def event(self, name: str) -> asyncio.Event:
        return self._events[name]

    def instance(self, name: str) -> Manifest | None:
        return self.store.get((self.namespace, name))


def _condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


class JupyternetesSpawner(Spawner):
    """Spawn notebook servers by creating JupyterNotebookInstances for jupyternetes-ssa."""

    namespace = Unicode(config=True, help="Namespace of the instances (default: the hub's).")
    template_name = Unicode(
        "default-template",
        config=True,
        help="JupyterNotebookTemplate to use when no profile says otherwise.",
    )
    template_namespace = Unicode(
        "", config=True, help="Namespace of the template (empty: the instances')."
    )
    kubeconfig = Unicode(
        "", config=True, help="Kubeconfig file; empty: in-cluster service account or KUBECONFIG."
    )
    extra_variables = Dict(
        config=True,
        help="More template variables: name -> string, or a "
        "callable(spawner) returning one (may be async).",
    )
    profile_list = Union(
        [List(Dict()), Dict(), Callable()],
        config=True,
        help="kubespawner's profile_list: profiles (display_name, slug, description, default, "
        "profile_options with choices and unlisted_choice), where template_name, "
        "template_namespace and variables take kubespawner_override's place; or a dict of them, "
        "or a callable(spawner) returning the list (may be async), e.g. per group.",
    )
    profiles = List(Dict(), config=True, help="Older name of profile_list (used when it is empty).")
    api_token_in_variables = Bool(
        False,
        config=True,
        help="INSECURE opt-in for the original Jupyternetes' templates: send the API token in "
        "plain text as the variable jupyterhub.api_token, readable by anyone who can read "
        "instances. Default: seal it to the reconciler's key (spec.sealedApiToken).",
    )
    sealing_key_namespace = Unicode(
        "",
        config=True,
        help="Namespace of the reconciler's public-key ConfigMap (jupyternetes-ssa-public-key); "
        "empty: the instances' namespace.",
    )
    field_manager = Unicode("jupyterhub-jupyternetes", config=True)
    pod_item = Unicode(
        "",
        config=True,
        help="Template pod item serving the notebook "
        "(default: `notebook`, else the first with an address).",
    )
    delete_timeout = Float(120.0, config=True, help="Seconds stop/delete_forever wait.")
    delete_pvc = Bool(
        True,
        config=True,
        help="As kubespawner's: deleting a user or a named server purges its PVCs (spec.purge); "
        "False keeps them.",
    )
    purge_wait = Float(
        10.0,
        config=True,
        help="Seconds delete_forever waits for the purge inside the hub's request; the rest "
        "(up to delete_timeout) runs in the background, so deleting users never blocks.",
    )
    hub_namespace = Unicode(config=True, help="Sent as jupyterhub.namespace.")

    instance_name = Unicode("")
    instance_namespace = Unicode("")
    template_ref = Dict()  # the template the last start used: delete_forever needs no profile
    _starting = Bool(False)
    _uid = Unicode("")  # the instance this start applied: progress ignores any other

    @default("namespace")
    def _default_namespace(self) -> str:
        return os.environ.get("POD_NAMESPACE") or _service_account_namespace() or "default"

    @default("hub_namespace")
    def _default_hub_namespace(self) -> str:
        return os.environ.get("POD_NAMESPACE") or self.namespace

    @default("ip")
    def _default_ip(self) -> str:
        return "0.0.0.0"

    @default("port")
    def _default_port(self) -> int:
        return 8888

    @default("options_form")
    def _default_options_form(self) -> Any:
        source = self._profile_source()
        if not source:
            return ""
        if callable(source):  # rendered per user, when JupyterHub asks
            return self._render_form
        return profiles.form_html(profiles.initialize(profiles.as_list(source)))

    async def _render_form(self, spawner: Spawner) -> str:
        return profiles.form_html(await profiles.resolve(self._profile_source(), spawner))

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return self._options_from_form

    async def _options_from_form(self, formdata: dict) -> dict:
        """kubespawner's form fields; a choice not offered to this user is refused (400) here,
        so the form comes back with the message."""
        options = profiles.options_from_form(formdata)
        await self._choose(options)
        return options

    # --- state ---------------------------------------------------------------------------
    def get_state(self) -> dict:
        state = super().get_state()
        if self.instance_name:
            state["instance_name"] = self.instance_name
        if self.instance_namespace:
            state["instance_namespace"] = self.instance_namespace
        if self.template_ref:
            state["template"] = dict(self.template_ref)
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.instance_name = state.get("instance_name", "")
        self.instance_namespace = state.get("instance_namespace", "")
        self.template_ref = state.get("template") or {}

    def clear_state(self) -> None:
        """Forget the running instance; keep where it was and its template, which
        delete_forever (called on stopped servers) needs to purge the right PVCs."""
        super().clear_state()
        self.instance_name = ""

    # --- plumbing ------------------------------------------------------------------------
    async def _kube(self) -> Kube:
        """One client per kubeconfig and event loop, shared by every spawner of the hub (a
        client holds a connection pool: one per start or stop would pile them up)."""
        clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
        if self.kubeconfig not in clients:
            clients[self.kubeconfig] = await Kube.connect(kubeconfig=self.kubeconfig or None)
        return clients[self.kubeconfig]

    async def _watch(self, namespace: str = "") -> InstanceWatch:
        ns = namespace or self.namespace
        return await InstanceWatch.get(await self._kube(), self.kubeconfig, ns)

    def _name(self) -> str:
        """The saved instance name, else the deterministic one (a start the hub did not save)."""
        return self.instance_name or instance_name(self.user.name, self.name)

    def _namespace(self) -> str:
        """Where this server's instance lives: where it was started, whatever the setting now
        (an unsaved start used the current setting)."""
        return (self.instance_name and self.instance_namespace) or self.namespace

    def _profile_source(self) -> Any:
        return self.profile_list or self.profiles

    async def _choose(self, user_options: dict | None) -> Choice:
        """The template and variables the user's options select; refused choices are a 400."""
        try:
            offered = await profiles.resolve(self._profile_source(), self)
            return profiles.choose(offered, user_options)
        except ProfileError as err:
            raise web.HTTPError(500 if err.config else 400, f"jupyternetes: {err}") from None

    async def template_variables(self, profile: Choice) -> dict[str, str]:
        """What the template may use: the original's seven, the server's URLs, the hub's env."""
        env = {k: v for k, v in self.get_env().items() if k not in TOKEN_VARIABLES}
        name = self.instance_name
        variables = {f"jupyterhub.env.{k}": str(v) for k, v in env.items() if v is not None}
        variables.update(
            {
                "jupyterhub.user.id": str(self.user.id),
                "jupyterhub.user.name": self.user.name,
                "jupyternetes.instance.name": name,
                "jupyternetes.instance.namespace": self.namespace,
                "jupyterhub.namespace": self.hub_namespace,
                "jupyterhub.oauth_client_id": self.oauth_client_id,
                "jupyterhub.server.name": self.name or "",
                "jupyterhub.base_url": env.get("JUPYTERHUB_BASE_URL", "/"),
                "jupyterhub.service_prefix": env.get("JUPYTERHUB_SERVICE_PREFIX", ""),
                **name_variables(self.user.name, self.name or ""),
            }
        )
        if self.api_token_in_variables:
            variables["jupyterhub.api_token"] = self.api_token
        own = set(variables)
        for key, value in {**self.extra_variables, **profile.variables}.items():
            if key in own:  # the user's identity: no profile, choice or config may replace it
                raise SpawnFailed(
                    f"jupyternetes: configuration error: extra_variables or a profile sets "
                    f"{key!r}, which the spawner sets itself; rename that variable"
                )
            variables[key] = await _resolve(value, self)
        return variables

    def _template_ref(self, profile: Choice) -> dict:
        namespace = profile.template_namespace
        return {
            "name": profile.template_name or self.template_name,
            "namespace": self.template_namespace if namespace is None else namespace,
        }

    # --- the Spawner contract -------------------------------------------------------------
    async def start(self) -> str:
        self._starting, self._uid = True, ""
        try:
            profile = await self._choose(self.user_options)
            self.instance_name = instance_name(self.user.name, self.name)
            self.instance_namespace = self.namespace
            kube, watch = await self._kube(), await self._watch()
            leftover = watch.instance(self.instance_name)
            if _purge_pending(leftover):
                # A deleted user's data is still being deleted: starting now would cancel that
                # and hand it to whoever has this name now.
                raise SpawnFailed(
                    f"jupyternetes: the data of an earlier {self.instance_name} is still being "
                    "deleted (spec.purge); try again once the reconciler has finished"
                )
            if leftover is not None:  # left over from a crash
                await self._delete_and_wait(kube, watch)
            body = await self._instance_body(profile)
            body["spec"].update(await self._sealed_token(kube))
            live = await kube.apply(body, field_manager=self.field_manager)
            self._uid, self.template_ref = live["metadata"]["uid"], body["spec"]["template"]
            try:
                return await self._wait_ready(watch, self._uid)
            except SpawnFailed:  # fatal: poll will say stopped, so JupyterHub will not stop it
                await self._delete_quietly(kube)
                raise
        finally:
            self._starting = False

    async def _delete_quietly(self, kube: Kube) -> None:
        try:
            await kube.delete(INSTANCE, self.namespace, self.instance_name, uid=self._uid)
        except ApiError as err:
            self.log.warning("jupyternetes: cannot delete failed %s: %s", self.instance_name, err)

    async def _instance_body(self, profile: Choice) -> Manifest:
        return {
            "apiVersion": INSTANCE.api_version,
            "kind": INSTANCE.kind,
            "metadata": {
                "name": self.instance_name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "jupyterhub",
                    "hub.jupyter.org/username": _label(self.user.name),
                    "hub.jupyter.org/servername": _label(self.name or ""),
                },
            },
            "spec": {
                "template": self._template_ref(profile),
                "variables": await self.template_variables(profile),
            },
        }

    async def _sealed_token(self, kube: Kube) -> dict:
        """spec.sealedApiToken: the token sealed to the reconciler's key for this instance only."""
        if self.api_token_in_variables:
            self.log.warning(
                "jupyternetes: api_token_in_variables is on: %s/%s holds the API token in plain "
                "text (spec.variables)",
                self.namespace,
                self.instance_name,
            )
            return {}
        public = await keys.read_public_key(kube, self.sealing_key_namespace or self.namespace)
        sealed = seal(self.api_token, public, self.namespace, self.instance_name)
        return {"sealedApiToken": sealed}

    def _ready_url(self, instance: Manifest, uid: str) -> str | None:
        """The server's URL once the instance reports a ready pod, or raise on a fatal error."""
        if instance["metadata"].get("uid") != uid:
            return None
        status = instance.get("status") or {}
        if status.get("observedGeneration", 0) < instance["metadata"].get("generation", 1):
            return None
        degraded = _condition(status, "Degraded")
        if degraded.get("status") == "True" and degraded.get("reason") in FATAL:
            raise SpawnFailed(f"jupyternetes: {degraded.get('reason')}: {degraded.get('message')}")
        if _condition(status, "Ready").get("status") != "True":
            return None
        pod = self._serving_pod(status)
        return f"http://{pod['podAddress']}:{pod['portNumber']}" if pod else None

    def _serving_pod(self, status: dict) -> dict | None:
        pods = status.get("pods") or {}
        if self.pod_item:
            candidates = [pods.get(self.pod_item) or {}]
        else:
            candidates = [pods.get("notebook") or {}, *pods.values()]
        return next((p for p in candidates if p.get("podAddress") and p.get("portNumber")), None)

    async def _wait_ready(self, watch: InstanceWatch, uid: str) -> str:
        """Wait for our instance (by uid) to be ready. Until the watch delivers it, the cache may
        hold nothing or a leftover: only a deletion of this uid means it is gone."""
        while True:
            changed = watch.event(self.instance_name)
            if watch.deleted.get(self.instance_name) == uid:
                raise SpawnFailed(
                    f"jupyternetes: instance {self.namespace}/{self.instance_name} was deleted "
                    "while starting"
                )
            instance = watch.instance(self.instance_name)
            if instance is not None and (url := self._ready_url(instance, uid)):
                return url
            await changed.wait()

    async def poll(self) -> int | None:
        """None while the server runs or is being (re-)created; 1 once it failed or its instance
        is gone; 0 when never started. A server the hub forgot to save (restart mid-spawn) is
        found by its deterministic name; a re-created pod's new address is taken over."""
        if self._starting:
            return None
        if not self.instance_name and self.server is None:
            return 0
        name, namespace = self._name(), self._namespace()
        try:
            watch = await self._watch(namespace)
        except RuntimeError as err:  # cannot tell: a running server must not be dropped
            self.log.warning("jupyternetes: %s; assuming %s still runs", err, name)
            return None
        instance = watch.instance(name)
        if instance is None or instance["metadata"].get("deletionTimestamp"):
            self.log.info("jupyternetes: %s: instance %s is gone", self._log_name, name)
            return 1 if self.instance_name else 0
        self.instance_name, self.instance_namespace = name, namespace
        status = instance.get("status") or {}
        exit_status = _exit_status(status, self._serving_pod(status) or self._pod_entry(status))
        if exit_status is not None:
            self.log.info(
                "jupyternetes: %s stopped (%s): %s", self._log_name, status.get("phase"), name
            )
            return exit_status
        pod = self._serving_pod(status) or {}
        if pod.get("state") == "Running":
            await self._follow(pod)
        return None  # running, or Missing/Processed/Terminating: the reconciler re-creates it

    def _pod_entry(self, status: dict) -> dict:
        pods = status.get("pods") or {}
        return pods.get(self.pod_item or "notebook") or next(iter(pods.values()), {})

    async def _follow(self, pod: dict) -> None:
        """The pod was re-created with another address: tell the hub's database and the proxy
        (what kubespawner's poll does, plus the route, so users are not sent to the old IP)."""
        server = self.server
        if server is None or not pod.get("podAddress") or not pod.get("portNumber"):
            return
        address = (pod["podAddress"], int(pod["portNumber"]))
        if (server.ip, server.port) == address:
            return
        self.log.warning(
            "jupyternetes: %s moved from %s:%s to %s:%s (pod re-created); following it",
            self._log_name,
            server.ip,
            server.port,
            *address,
        )
        server.ip, server.port = address
        _commit(server)
        proxy = getattr(self.user, "settings", {}).get("proxy")
        if proxy is not None and not self.pending:
            try:
                await proxy.add_user(self.user, self.name)
            except Exception as err:  # the hub's periodic check_routes repairs it later
                self.log.warning("jupyternetes: route of %s not updated: %s", self._log_name, err)

    async def get_url(self) -> str:
        """Asked after a hub restart when poll says running: the instance's current address
        (waiting up to start_timeout for a server that was still starting), else the saved one."""
        watch = await self._watch(self._namespace())
        try:
            url = await asyncio.wait_for(self._current_url(watch), timeout=self.start_timeout)
        except (TimeoutError, RuntimeError) as err:
            self.log.warning("jupyternetes: no address for %s (%s)", self._log_name, err)
            return await super().get_url()
        return f"{url}{self.server.base_url}" if self.server else url

    async def _current_url(self, watch: InstanceWatch) -> str:
        name = self._name()
        while True:
            changed = watch.event(name)
            instance = watch.instance(name)
            if instance is None:
                raise RuntimeError(f"instance {self._namespace()}/{name} is gone")
            if url := self._ready_url(instance, instance["metadata"].get("uid", "")):
                return url
            await changed.wait()

    async def stop(self, now: bool = False) -> None:
        self.instance_name, self.instance_namespace = self._name(), self._namespace()
        watch = await self._watch(self.instance_namespace)
        if _purge_pending(watch.instance(self.instance_name)):
            return  # an earlier user's data is being deleted: deleting this would cancel that
        await self._delete_and_wait(await self._kube(), watch)

    async def _delete_and_wait(self, kube: Kube, watch: InstanceWatch, uid: str = "") -> None:
        """Foreground delete: the instance disappears only after its pods (blockOwnerDeletion)."""
        namespace = self.instance_namespace or self.namespace
        try:
            await kube.delete(
                INSTANCE, namespace, self.instance_name, uid=uid or None, propagation="Foreground"
            )
        except ApiError as err:
            if err.status != 409:
                raise
        await asyncio.wait_for(self._gone(watch, uid), timeout=self.delete_timeout)

    async def _gone(self, watch: InstanceWatch, uid: str = "") -> None:
        while True:
            changed = watch.event(self.instance_name)
            instance = watch.instance(self.instance_name)
            if instance is None or (uid and instance["metadata"].get("uid") != uid):
                return
            await changed.wait()

    async def delete_forever(self) -> None:
        """Ask the reconciler to delete this server's PVCs (spec.purge). Waits `purge_wait` at
        most: the hub's DELETE request is not held for minutes; the rest (wait for Purged, then
        delete the instance) runs on in the background. Needs no profile: a profile removed
        from the config since the server last ran does not matter."""
        if not self.delete_pvc:
            self.log.info("jupyternetes: delete_pvc is off; keeping %s's PVCs", self._log_name)
            return
        self.instance_name = self._name()
        self.instance_namespace = self.instance_namespace or self.namespace  # where its PVCs are
        kube, watch = await self._kube(), await self._watch(self.instance_namespace)
        template = dict(self.template_ref) or self._template_ref(Choice())
        body = await self._purge_body(template)
        live = await kube.apply(body, field_manager=self.field_manager)
        task = asyncio.create_task(self._finish_purge(kube, watch, live["metadata"]["uid"]))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.purge_wait)
        except TimeoutError:
            self.log.info(
                "jupyternetes: purge of %s/%s goes on in the background",
                self.instance_namespace,
                self.instance_name,
            )

    async def _purge_body(self, template: dict) -> Manifest:
        return {
            "apiVersion": INSTANCE.api_version,
            "kind": INSTANCE.kind,
            "metadata": {
                "name": self.instance_name,
                "namespace": self.instance_namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "jupyterhub",
                    "hub.jupyter.org/username": _label(self.user.name),
                    "hub.jupyter.org/servername": _label(self.name or ""),
                },
            },
            "spec": {"template": template, "purge": True},
        }

    async def _finish_purge(self, kube: Kube, watch: InstanceWatch, uid: str) -> None:
        try:
            await asyncio.wait_for(self._purged(watch, uid), timeout=self.delete_timeout)
            await self._delete_and_wait(kube, watch, uid)
        except TimeoutError:
            self.log.warning(
                "jupyternetes: %s/%s not purged after %ss; the reconciler will "
                "finish it, the instance stays until then",
                self.instance_namespace,
                self.instance_name,
                self.delete_timeout,
            )
        except (ApiError, OSError) as err:
            self.log.warning("jupyternetes: purge of %s: %s", self.instance_name, err)

    async def _purged(self, watch: InstanceWatch, uid: str) -> None:
        """Until that instance reports Purged; returns early if it is gone or replaced."""
        while True:
            changed = watch.event(self.instance_name)
            instance = watch.instance(self.instance_name)
            if instance is not None and instance["metadata"].get("uid") == uid:
                if (instance.get("status") or {}).get("phase") == "Purged":
                    return
            elif watch.deleted.get(self.instance_name) == uid:
                return
            await changed.wait()

    async def progress(self):
        """Progress from this start's instance (never a leftover's), as it changes, with
        percentages that only rise."""
        async for event in self._progress(await self._watch()):
            yield event

    async def _progress(self, watch: InstanceWatch):
        name = instance_name(self.user.name, self.name)
        last: dict[str, Any] = {"progress": 0}
        while True:
            changed = watch.event(name)
            instance = watch.instance(name)
            if not self._uid or instance is None or instance["metadata"].get("uid") != self._uid:
                instance = None
            event = _progress_event(instance)
            event["progress"] = max(event["progress"], last["progress"])
            if event != last:
                yield event
                last = event
            if event["progress"] >= 100:
                return
            # start() names the uid only after its apply: look again now and then
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=1.0)


def _exit_status(status: dict, pod: dict) -> int | None:
    """What poll reports for an instance: None while its server runs or will run again.

    A pod that is missing, terminating or starting is being re-created by the reconciler; so is
    one whose apply failed once (ApplyFailed may pass). The server is over when its pod failed
    or ended, when its data is purged, or when it is gone and a configuration error (the template
    cannot be rendered or used) stops it from coming back.
    """
    state = pod.get("state")
    if state == "Succeeded":
        return 0
    if state == "Failed" or status.get("phase") in ("Purged", "Purging"):
        return 1
    reason = _condition(status, "Degraded").get("reason")
    if state in (None, "Missing", "Error") and reason in NO_COMEBACK:
        return 1
    return None


def _purge_pending(instance: Manifest | None) -> bool:
    """A deleted server's data that the reconciler has not finished deleting (spec.purge)."""
    return (
        instance is not None
        and bool((instance.get("spec") or {}).get("purge"))
        and (instance.get("status") or {}).get("phase") != "Purged"
    )


def _progress_event(instance: Manifest | None) -> dict[str, Any]:
    if instance is None:
        return {"progress": 5, "message": "Requesting a notebook server"}
    status = instance.get("status") or {}
    ready, progressing = _condition(status, "Ready"), _condition(status, "Progressing")
    degraded = _condition(status, "Degraded")
    if degraded.get("status") == "True":
        return {"progress": 90, "message": f"Error: {degraded.get('message', '')}"}
    if ready.get("status") == "True":
        return {"progress": 100, "message": "Server ready"}
    if not status:
        return {"progress": 10, "message": "Waiting for the reconciler (jupyternetes-ssa)"}
    if status.get("podsProvisioned") != "Completed":
        return {"progress": 30, "message": "Creating storage and pod"}
    detail = progressing.get("message") or "starting"
    steps = [
        STEPS.get(str(p.get("parameters", {}).get("lastEvent", "")).split(":")[0], 35)
        for p in (status.get("pods") or {}).values()
    ]
    return {"progress": min(steps, default=35), "message": f"Pod starting: {detail}"}


async def _resolve(value: Any, spawner: Spawner) -> str:
    if callable(value):
        value = value(spawner)
        if inspect.isawaitable(value):
            value = await value
    return str(value)


def _commit(server: Any) -> None:
    """Save a Server's changed address, as JupyterHub does after its own url checks."""
    from sqlalchemy import inspect as orm_inspect

    session = orm_inspect(server.orm_server).session if server.orm_server is not None else None
    if session is not None:
        session.commit()


def _label(value: str) -> str:
    return safe_label_value(value) if value else ""


def _service_account_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


__all__ = ["InstanceWatch", "JupyternetesSpawner", "instance_name"]
