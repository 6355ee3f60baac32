"""JupyterHub's side: a Spawner that only ever writes JupyterNotebookInstances.

The hub never creates pods or PVCs (it needs no rights on them): `start` applies the user's
instance and waits, through one shared watch on the namespace's instances, until the reconciler
reports a ready pod with an address; `stop` deletes the instance in the foreground (so it returns
once the pod is gone) and leaves the user's PVCs for the next start; `delete_forever` asks the
reconciler to purge them (`spec.purge`).
"""

from __future__ import annotations

import asyncio
import html
import inspect
import os
import uuid
from collections import defaultdict
from typing import Any

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Bool, Dict, Float, List, Unicode, default

from jupyternetes_ssa import keys
from jupyternetes_ssa.informer import Informer
from jupyternetes_ssa.kube import INSTANCE, ApiError, Kube
from jupyternetes_ssa.names import safe_label_value
from jupyternetes_ssa.sealing import seal
from jupyternetes_ssa.types import Manifest

FATAL = {
    "RenderFailed",
    "TemplateNotFound",
    "TemplateNotAllowed",
    "ApplyFailed",
    "ItemFailed",
    "PurgeFailed",
    "SealingKeyMissing",
    "SealingKeyUnknown",
    "SealedForAnotherInstance",
    "SealedTokenTampered",
    "SealedTokenInvalid",
    "TokenSecretConflict",
}
TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


def instance_name(user: str, server: str = "") -> str:
    """The original's name for the default server (uuid5 of the user name); named servers hash
    user and server joined by NUL, which no user or server name holds, so no two collide."""
    key = f"{user}\x00{server}" if server else user
    return uuid.uuid5(uuid.UUID(int=0), key).hex


class InstanceWatch:
    """One list+watch of a namespace's instances, shared by every spawner of the hub.

    Waiters take the change event for a name, check the cache, then wait: no change is missed.
    """

    _shared: dict[tuple[int, str, str], InstanceWatch] = {}

    def __init__(self, kube: Kube, namespace: str):
        self.store: dict[tuple[str, str], Manifest] = {}
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
        deadline = asyncio.get_running_loop().time() + 30
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
    profiles = List(
        Dict(),
        config=True,
        help="Choices offered to users: dicts with slug, "
        "display_name, description, template_name, template_namespace, variables, "
        "default.",
    )
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
    hub_namespace = Unicode(config=True, help="Sent as jupyterhub.namespace.")

    instance_name = Unicode("")
    instance_namespace = Unicode("")
    _starting = Bool(False)

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
    def _default_options_form(self) -> str:
        if not self.profiles:
            return ""
        chosen = self._default_profile().get("slug")
        options = "".join(
            f'<option value="{html.escape(p["slug"])}"'
            f"{' selected' if p.get('slug') == chosen else ''}>"
            f"{html.escape(p.get('display_name', p['slug']))}"
            f"{' — ' + html.escape(p['description']) if p.get('description') else ''}</option>"
            for p in self.profiles
        )
        return f'<label for="profile">Server</label><select name="profile">{options}</select>'

    def options_from_form(self, formdata: dict) -> dict:
        return {"profile": (formdata.get("profile") or [""])[0]}

    # --- state ---------------------------------------------------------------------------
    def get_state(self) -> dict:
        state = super().get_state()
        if self.instance_name:
            state.update(
                instance_name=self.instance_name, instance_namespace=self.instance_namespace
            )
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.instance_name = state.get("instance_name", "")
        self.instance_namespace = state.get("instance_namespace", "")

    def clear_state(self) -> None:
        super().clear_state()
        self.instance_name = self.instance_namespace = ""

    # --- plumbing ------------------------------------------------------------------------
    async def _kube(self) -> Kube:
        return await Kube.connect(kubeconfig=self.kubeconfig or None)

    async def _watch(self) -> InstanceWatch:
        return await InstanceWatch.get(await self._kube(), self.kubeconfig, self.namespace)

    def _default_profile(self) -> dict:
        return next((p for p in self.profiles if p.get("default")), self.profiles[0])

    def chosen_profile(self) -> dict:
        """The profile the user asked for; an unknown choice is refused (400)."""
        if not self.profiles:
            return {}
        slug = (self.user_options or {}).get("profile") or self._default_profile()["slug"]
        for profile in self.profiles:
            if profile.get("slug") == slug:
                return profile
        known = ", ".join(p["slug"] for p in self.profiles)
        raise web.HTTPError(400, f"unknown profile {slug!r}; choose one of: {known}")

    async def template_variables(self, profile: dict) -> dict[str, str]:
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
            }
        )
        if self.api_token_in_variables:
            variables["jupyterhub.api_token"] = self.api_token
        for key, value in {**self.extra_variables, **profile.get("variables", {})}.items():
            variables[key] = await _resolve(value, self)
        return variables

    def _template_ref(self, profile: dict) -> dict:
        return {
            "name": profile.get("template_name", self.template_name),
            "namespace": profile.get("template_namespace", self.template_namespace),
        }

    # --- the Spawner contract -------------------------------------------------------------
    async def start(self) -> str:
        self._starting = True
        try:
            profile = self.chosen_profile()
            self.instance_name = instance_name(self.user.name, self.name)
            self.instance_namespace = self.namespace
            kube, watch = await self._kube(), await self._watch()
            if watch.instance(self.instance_name) is not None:  # left over from a crash
                await self._delete_and_wait(kube, watch)
            body = await self._instance_body(profile)
            body["spec"].update(await self._sealed_token(kube))
            live = await kube.apply(body, field_manager=self.field_manager)
            return await self._wait_ready(watch, live["metadata"]["uid"])
        finally:
            self._starting = False

    async def _instance_body(self, profile: dict) -> Manifest:
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
            raise RuntimeError(f"jupyternetes: {degraded.get('reason')}: {degraded.get('message')}")
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
        seen = False  # the watch may not have delivered our own apply yet
        while True:
            changed = watch.event(self.instance_name)
            instance = watch.instance(self.instance_name)
            seen = seen or (instance or {}).get("metadata", {}).get("uid") == uid
            if instance is None and seen:
                raise RuntimeError(
                    f"instance {self.namespace}/{self.instance_name} was deleted while starting"
                )
            if instance is not None and (url := self._ready_url(instance, uid)):
                return url
            await changed.wait()

    async def poll(self) -> int | None:
        if self._starting:
            return None
        if not self.instance_name:
            return 0
        instance = (await self._watch()).instance(self.instance_name)
        if instance is None:
            return 1
        status = instance.get("status") or {}
        pod = (status.get("pods") or {}).get(self.pod_item or "notebook") or next(
            iter((status.get("pods") or {}).values()), {}
        )
        state = pod.get("state")
        if state == "Succeeded":
            return 0
        if state in ("Failed", "Missing") or status.get("phase") in ("Purged", "Purging"):
            return 1
        if status.get("phase") == "Error" and state != "Running":
            return 1
        return None

    async def stop(self, now: bool = False) -> None:
        if not self.instance_name:
            self.instance_name = instance_name(self.user.name, self.name)
        await self._delete_and_wait(await self._kube(), await self._watch())

    async def _delete_and_wait(self, kube: Kube, watch: InstanceWatch) -> None:
        """Foreground delete: the instance disappears only after its pods (blockOwnerDeletion)."""
        try:
            await kube.delete(
                INSTANCE, self.namespace, self.instance_name, propagation="Foreground"
            )
        except ApiError as err:
            if err.status != 409:
                raise
        await asyncio.wait_for(self._gone(watch), timeout=self.delete_timeout)

    async def _gone(self, watch: InstanceWatch) -> None:
        while True:
            changed = watch.event(self.instance_name)
            if watch.instance(self.instance_name) is None:
                return
            await changed.wait()

    async def delete_forever(self) -> None:
        """Ask the reconciler to delete this server's PVCs (spec.purge), wait, then clean up."""
        name = self.instance_name or instance_name(self.user.name, self.name)
        self.instance_name = name
        kube, watch = await self._kube(), await self._watch()
        body = await self._instance_body(self.chosen_profile() if self.profiles else {})
        body["spec"] = {"template": body["spec"]["template"], "purge": True}
        await kube.apply(body, field_manager=self.field_manager)
        try:
            await asyncio.wait_for(self._purged(watch), timeout=self.delete_timeout)
        except TimeoutError:
            self.log.warning(
                "jupyternetes: %s/%s not purged after %ss; the reconciler will "
                "finish it, the instance stays until then",
                self.namespace,
                name,
                self.delete_timeout,
            )
            return
        await self._delete_and_wait(kube, watch)

    async def _purged(self, watch: InstanceWatch) -> None:
        while True:
            changed = watch.event(self.instance_name)
            instance = watch.instance(self.instance_name) or {}
            if (instance.get("status") or {}).get("phase") == "Purged":
                return
            await changed.wait()

    async def progress(self):
        """Progress from the instance's status and conditions, as they change."""
        watch = await self._watch()
        last = None
        while True:
            changed = watch.event(self.instance_name) if self.instance_name else None
            event = _progress_event(watch.instance(self.instance_name) if changed else None)
            if event != last:
                yield event
                last = event
            if event["progress"] >= 100:
                return
            if changed is None:
                await asyncio.sleep(0.5)  # start() has not named the instance yet
            else:
                await changed.wait()


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
    return {"progress": 60, "message": f"Pod starting: {detail}"}


async def _resolve(value: Any, spawner: Spawner) -> str:
    if callable(value):
        value = value(spawner)
        if inspect.isawaitable(value):
            value = await value
    return str(value)


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
