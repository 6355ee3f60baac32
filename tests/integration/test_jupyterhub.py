"""End to end: a real JupyterHub (with its proxy) spawns through JupyternetesSpawner, holding only
the Role in examples/hub-rbac.yaml; the continuous reconciler renders the pod; the fake node runs
the real `jupyterhub-singleuser` on the pod's loopback address; a request through the hub's proxy
reaches it. Then stop, start again on the same PVC, and delete the user (PVC purged).

The API token travels sealed (spec.sealedApiToken): a spy in the hub's process records every
request the spawner sends to the apiserver, so the tests can show the token is in none of them."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import rbac_audit
import yaml
from reconcile_helpers import EXAMPLES, put

from jupyternetes_ssa import keys
from jupyternetes_ssa.kube import INSTANCE, POD, PVC, TEMPLATE, ApiError, Kube, Resource
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.local_cluster.identity import can, request_token, token_kubeconfig
from jupyternetes_ssa.sealing import token_secret_name
from jupyternetes_ssa.spawner import instance_name

pytestmark = pytest.mark.integration
SECRET = Resource("v1", "Secret", "secrets")
NAMESPACE = Resource("v1", "Namespace", "namespaces")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hub:
    url: str  # the proxy: what users talk to
    api: httpx.AsyncClient  # the hub's REST API, as an admin service
    namespace: str
    kubeconfig: Path  # the hub's own narrow identity
    log: Path
    spy: Path  # every request the hub's spawner sent to the apiserver, one JSON line each


@pytest.fixture(scope="module")
async def hub_namespace(cluster) -> AsyncIterator[str]:
    kube = Kube(cluster.api)
    name = f"hub-{uuid.uuid4().hex[:6]}"
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await kube.delete(NAMESPACE, "", name)


@pytest.fixture(scope="module")
async def hub_identity(cluster, hub_namespace: str, tmp_path_factory) -> Path:
    """The hub's ServiceAccount with exactly the Roles of examples/hub-rbac.yaml, next to the
    reconciler's public-key Roles (examples/deploy/rbac/sealing-key: readable by anyone)."""
    kube = Kube(cluster.api)
    sealing_key = EXAMPLES / "deploy" / "rbac" / "sealing-key" / "role.yaml"
    for path in (EXAMPLES / "hub-rbac.yaml", sealing_key):
        for doc in yaml.safe_load_all(path.read_text()):
            doc["metadata"]["namespace"] = hub_namespace
            await _create(kube, doc)
    user = f"system:serviceaccount:{hub_namespace}:jupyterhub"
    await wait_for(
        lambda: can(
            cluster.api, user, hub_namespace, "create", "jupyternotebookinstances", "kadense.io"
        ),
        timeout=30,
        message="RBAC grants the hub its Role",
    )
    token = await request_token(cluster.api, hub_namespace, "jupyterhub")
    out = tmp_path_factory.mktemp("hub-identity") / "kubeconfig"
    return token_kubeconfig(cluster.kubeconfig, token, out, hub_namespace)


async def _create(kube: Kube, doc: dict) -> None:
    from jupyternetes_ssa.kube import BY_KIND

    res = BY_KIND.get(doc["kind"]) or _rbac(doc)
    await kube.request(
        "POST", res, doc["metadata"]["namespace"], res.url(), content=json.dumps(doc)
    )


def _rbac(doc: dict) -> Resource:
    plural = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}
    return Resource(doc["apiVersion"], doc["kind"], plural[doc["kind"]])


@pytest.fixture(scope="module")
async def reconciler(cluster, hub_namespace: str, tmp_path_factory) -> AsyncIterator[None]:
    """The continuous reconciler, as its own process with its own (admin) credentials."""
    log = tmp_path_factory.mktemp("reconciler") / "reconciler.log"
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyternetes_ssa",
                "reconcile",
                "-n",
                hub_namespace,
                "--health-port",
                "0",
                "--key-namespace",
                hub_namespace,
                "--allow-kind",  # hub-template's NetworkPolicy
                "NetworkPolicy.networking.k8s.io",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    kube = Kube(cluster.api)
    await wait_for(
        lambda: kube.get(keys.CONFIGMAP, hub_namespace, keys.PUBLIC_CONFIGMAP),
        timeout=60,
        message=f"the reconciler publishes its public key (log: {log})",
    )
    yield
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
async def hub(
    cluster, hub_namespace, hub_identity, reconciler, tmp_path_factory
) -> AsyncIterator[Hub]:
    kube = Kube(cluster.api)
    template = yaml.safe_load((EXAMPLES / "hub-template.yaml").read_text())
    template["metadata"]["namespace"] = hub_namespace
    if os.geteuid() == 0:  # CI runs as root here; jupyter_server refuses root unless told
        template["spec"]["pods"][0]["spec"]["containers"][0]["args"] = ["--allow-root"]
    await put(kube, template)
    workdir = tmp_path_factory.mktemp("jupyterhub")
    spy = workdir / "kube-requests.jsonl"
    (workdir / "kube_spy.py").write_text(SPY)
    token = secrets.token_hex(16)
    proxy_port, hub_port = free_port(), free_port()
    chp = str(Path(sys.executable).parent / "configurable-http-proxy")
    (workdir / "jupyterhub_config.py").write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, "{workdir}")
        import kube_spy  # noqa
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {proxy_port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {hub_port}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
        c.ConfigurableHTTPProxy.command = [{chp!r}]
        c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
        c.JupyterHub.allow_named_servers = True
        c.JupyterHub.authenticator_class = "null"
        c.JupyterHub.services = [{{"name": "e2e", "api_token": "{token}"}}]
        c.JupyterHub.load_roles = [{{"name": "e2e", "services": ["e2e"],
            "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"]}}]
        c.JupyterHub.spawner_class = "jupyternetes"
        c.JupyternetesSpawner.namespace = "{hub_namespace}"
        c.JupyternetesSpawner.template_name = "hub-template"
        c.JupyternetesSpawner.kubeconfig = "{hub_identity}"
        c.JupyternetesSpawner.start_timeout = 120
        c.JupyternetesSpawner.http_timeout = 60
        c.JupyternetesSpawner.delete_timeout = 60
        c.JupyternetesSpawner.profiles = [
            {{"slug": "standard", "display_name": "Standard", "default": True}},
            {{"slug": "alt", "display_name": "Alternative", "template_name": "hub-template",
              "variables": {{"flavor": "alt"}}}},
        ]
        c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}  # POST answers 202 at once
    """)
    )
    log = workdir / "jupyterhub.log"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env["KUBE_SPY_LOG"] = str(spy)
    env.pop("KUBECONFIG", None)  # the hub must use nothing but its own narrow identity
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(workdir / "jupyterhub_config.py")],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{proxy_port}"
    api = httpx.AsyncClient(
        base_url=f"{base}/hub/api", timeout=30, headers={"Authorization": f"token {token}"}
    )
    try:
        await wait_for(lambda: _up(api), timeout=60, message=f"JupyterHub up (log: {log})")
        yield Hub(base, api, hub_namespace, hub_identity, log, spy)
    finally:
        await api.aclose()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(log.read_text()[-5000:])
        if cluster.local is not None:  # the single-user servers' own logs, for a failing run
            for server_log in cluster.local.state_dir.rglob("notebook.log"):
                print(f"--- {server_log}\n{server_log.read_text()[-4000:]}")


SPY = """
# A spy in the hub's process, not a mock: every request still goes to the apiserver.
import json, os
from jupyternetes_ssa import kube

_request = kube.Kube.request


def _text(content):
    return content.decode() if isinstance(content, bytes) else content


async def _spy(self, method, res, namespace, url, **kwargs):
    line = {"method": method, "resource": res.plural, "namespace": namespace, "url": url,
            "params": repr(kwargs.get("params")), "content": _text(kwargs.get("content"))}
    with open(os.environ["KUBE_SPY_LOG"], "a") as out:
        out.write(json.dumps(line) + "\\n")
    return await _request(self, method, res, namespace, url, **kwargs)


kube.Kube.request = _spy
"""


async def _up(api: httpx.AsyncClient) -> bool:
    return (await api.get("/")).status_code == 200


async def _server(hub: Hub, user: str, server: str = "") -> dict:
    model = (await hub.api.get(f"/users/{user}")).json()
    return (model.get("servers") or {}).get(server) or {}


def _server_path(user: str, server: str = "") -> str:
    return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"


async def _progress(hub: Hub, user: str, server: str = "") -> list[dict]:
    """The spawn's progress events, as JupyterHub's event stream sends them, to the end."""
    events = []
    async with hub.api.stream(
        "GET", f"{_server_path(user, server)}/progress", timeout=150
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    return events


async def _start(hub: Hub, user: str, server: str = "", **options: str) -> dict:
    response = await hub.api.post(_server_path(user, server), json=options or None)
    assert response.status_code in (201, 202), response.text

    async def ready() -> dict | None:
        model = await _server(hub, user, server)
        return model if model.get("ready") else None

    return await wait_for(
        ready,
        timeout=150,
        interval=0.5,
        message=f"server {user}/{server} ready (hub log: {hub.log})",
    )


async def _stop(hub: Hub, user: str, server: str = "") -> None:
    response = await hub.api.delete(_server_path(user, server))
    assert response.status_code in (202, 204), response.text

    async def stopped() -> bool:
        return not await _server(hub, user, server)

    await wait_for(stopped, timeout=90, interval=0.5, message=f"server {user}/{server} stopped")


async def _user_token(hub: Hub, user: str) -> str:
    response = await hub.api.post(f"/users/{user}/tokens", json={"note": "e2e"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def _through_proxy(hub: Hub, user: str, token: str, server: str = "") -> httpx.Response:
    prefix = f"/user/{user}/{server}/" if server else f"/user/{user}/"
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as client:
        return await client.get(f"{prefix}api/status", headers={"Authorization": f"token {token}"})


async def test_a_user_server_starts_serves_through_the_proxy_restarts_and_is_deleted(
    cluster, hub: Hub
):
    kube = Kube(cluster.api)
    user = "alice"
    assert (await hub.api.post(f"/users/{user}")).status_code == 201
    token = await _user_token(hub, user)
    name = instance_name(user)

    model = await _start(hub, user)

    instance = await kube.get(INSTANCE, hub.namespace, name)
    assert instance["spec"]["template"]["name"] == "hub-template"
    variables = instance["spec"]["variables"]
    assert "jupyterhub.api_token" not in variables, "the token must not sit in the instance"
    assert not any(token in v for v in variables.values())
    assert variables["jupyterhub.user.name"] == user
    assert variables["jupyternetes.instance.name"] == name
    sealed = instance["spec"]["sealedApiToken"]
    secret = await kube.get(SECRET, hub.namespace, token_secret_name(name))
    assert secret["metadata"]["ownerReferences"][0]["uid"] == instance["metadata"]["uid"]
    server_token = base64.b64decode(secret["data"]["token"]).decode()
    assert server_token not in json.dumps(instance)
    sent = hub.spy.read_text()
    assert server_token not in sent, "the hub sent the token in plain text to the apiserver"
    assert sealed["ciphertext"] in sent  # ... only sealed, in its apply of the instance
    # The server's token is the one JupyterHub issued for it: the hub knows it as alice's server.
    me = await hub.api.get("/user", headers={"Authorization": f"token {server_token}"})
    assert me.status_code == 200 and me.json()["name"] == user, me.text
    address = instance["status"]["pods"]["notebook"]["podAddress"]
    assert address.startswith("127.")
    assert model["url"] == f"/user/{user}/"

    response = await _through_proxy(hub, user, token)
    assert response.status_code == 200, response.text
    assert "started" in response.json()  # jupyter_server's /api/status, from the real process
    pvc_uid = (await kube.get(PVC, hub.namespace, f"{name}-home"))["metadata"]["uid"]

    await _stop(hub, user)

    assert await kube.get(INSTANCE, hub.namespace, name) is None
    assert (await kube.get(PVC, hub.namespace, f"{name}-home"))["metadata"]["uid"] == pvc_uid

    await _start(hub, user)

    assert (await kube.get(PVC, hub.namespace, f"{name}-home"))["metadata"]["uid"] == pvc_uid
    assert (await _through_proxy(hub, user, token)).status_code == 200

    await _stop(hub, user)
    response = await hub.api.delete(f"/users/{user}")
    assert response.status_code == 204, response.text

    await wait_for(
        lambda: _gone(kube, PVC, hub.namespace, f"{name}-home"),
        timeout=60,
        message="the deleted user's PVC is purged by the reconciler",
    )
    assert await kube.get(INSTANCE, hub.namespace, name) is None
    hub_rights_proven(cluster, hub)


def hub_rights_proven(cluster, hub: Hub) -> None:
    """What the hub asked with its token (start, stop, start again, delete the user: every
    spawner path) is exactly what examples/hub-rbac.yaml grants: nothing more was used, nothing
    granted went unused. Read from the local cluster's audit log (kind and existing clusters
    keep theirs)."""
    if cluster.local is None:
        return
    used = rbac_audit.uses(cluster.local.audit_log, rbac_audit.credential(hub.kubeconfig))
    granted = rbac_audit.rules(list(yaml.safe_load_all((EXAMPLES / "hub-rbac.yaml").read_text())))
    # Every authenticated identity may read the reconciler's public key (rbac/sealing-key).
    sealing = EXAMPLES / "deploy" / "rbac" / "sealing-key"
    public = [
        d
        for f in sorted(sealing.glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d and d.get("kind") in ("Role", "ClusterRole") and "public" in d["metadata"]["name"]
    ]
    granted += rbac_audit.rules(public)
    assert not rbac_audit.not_granted(used, granted), rbac_audit.not_granted(used, granted)
    assert not rbac_audit.never_used(granted, used, {}), (
        f"examples/hub-rbac.yaml grants what the hub never used: "
        f"{rbac_audit.never_used(granted, used, {})}; used: {sorted(map(str, used))}"
    )


async def _gone(kube: Kube, res, ns: str, name: str) -> bool:
    return await kube.get(res, ns, name) is None


async def test_named_servers_get_their_own_instances(cluster, hub: Hub):
    kube = Kube(cluster.api)
    user = "bob"
    assert (await hub.api.post(f"/users/{user}")).status_code == 201
    token = await _user_token(hub, user)

    await _start(hub, user)
    await _start(hub, user, "second")

    names = {instance_name(user), instance_name(user, "second")}
    assert len(names) == 2
    for name in names:
        assert await kube.get(INSTANCE, hub.namespace, name) is not None
    assert (await _through_proxy(hub, user, token, "second")).status_code == 200
    assert (await _through_proxy(hub, user, token)).status_code == 200
    await _stop(hub, user, "second")
    await _stop(hub, user)


async def test_the_hubs_identity_cannot_touch_pods_pvcs_or_templates(hub: Hub):
    kube = await Kube.connect(kubeconfig=str(hub.kubeconfig))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "breakout", "namespace": hub.namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }
    with pytest.raises(ApiError) as refused:
        await kube.create(pod)
    assert refused.value.status == 403
    with pytest.raises(ApiError) as refused:
        await kube.apply(
            {
                "apiVersion": TEMPLATE.api_version,
                "kind": TEMPLATE.kind,
                "metadata": {"name": "hub-template", "namespace": hub.namespace},
                "spec": {"pods": []},
            },
            field_manager="hub",
        )
    assert refused.value.status == 403
    with pytest.raises(ApiError) as refused:
        await kube.list(PVC, hub.namespace)
    assert refused.value.status == 403
    with pytest.raises(ApiError) as refused:
        await kube.list(SECRET, hub.namespace)
    assert refused.value.status == 403
    minted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "minted", "namespace": hub.namespace},
        "type": "Opaque",
    }
    for attempt in (
        lambda: kube.get(SECRET, hub.namespace, keys.KEY_SECRET),  # the reconciler's keys
        lambda: kube.create(minted),
    ):
        with pytest.raises(ApiError) as refused:
            await attempt()
        assert refused.value.status == 403


async def test_progress_comes_from_the_instances_status(hub: Hub):
    user = "carol"
    assert (await hub.api.post(f"/users/{user}")).status_code == 201
    response = await hub.api.post(_server_path(user))
    assert response.status_code == 202, response.text

    events = await _progress(hub, user)

    assert events[-1].get("ready") is True, events
    ours = (
        "Requesting a notebook server",
        "Waiting for the reconciler",
        "Creating storage",
        "Pod starting",
        "Server ready",
    )
    assert any(e.get("message", "").startswith(ours) for e in events), events
    await _stop(hub, user)


async def test_profiles_choose_variables_and_an_unknown_choice_is_refused(cluster, hub: Hub):
    kube = Kube(cluster.api)
    user = "dave"
    assert (await hub.api.post(f"/users/{user}")).status_code == 201

    response = await hub.api.post(_server_path(user), json={"profile": "no-such-profile"})
    assert response.status_code == 202, response.text
    events = await _progress(hub, user)
    if events:  # the stream caught the failure; else it ended before (the refusal is immediate)
        assert events[-1].get("failed") is True, events
        assert "unknown profile 'no-such-profile'" in events[-1]["message"]
    else:
        assert "unknown profile 'no-such-profile'" in hub.log.read_text()
        assert not (await _server(hub, user)).get("ready")
    assert await kube.get(INSTANCE, hub.namespace, instance_name(user)) is None

    await _start(hub, user, "alt", profile="alt")
    instance = await kube.get(INSTANCE, hub.namespace, instance_name(user, "alt"))
    assert instance["spec"]["variables"]["flavor"] == "alt"
    await _stop(hub, user, "alt")


async def test_a_sealed_token_replayed_into_another_instance_is_refused(cluster, hub: Hub):
    kube = Kube(cluster.api)
    user = "frank"
    assert (await hub.api.post(f"/users/{user}")).status_code == 201
    await _start(hub, user)
    instance = await kube.get(INSTANCE, hub.namespace, instance_name(user))
    spec = json.loads(json.dumps(instance["spec"]))
    spec["variables"]["jupyternetes.instance.name"] = "replayed"
    await put(
        kube,
        {
            "apiVersion": INSTANCE.api_version,
            "kind": INSTANCE.kind,
            "metadata": {"name": "replayed", "namespace": hub.namespace},
            "spec": spec,  # the spawner's ciphertext, copied as it is
        },
    )

    async def refused() -> dict | None:
        status = (await kube.get(INSTANCE, hub.namespace, "replayed")).get("status") or {}
        degraded = next((c for c in status.get("conditions", []) if c["type"] == "Degraded"), {})
        return degraded if degraded.get("status") == "True" else None

    degraded = await wait_for(refused, timeout=60, message="the replayed instance is refused")

    assert degraded["reason"] == "SealedForAnotherInstance", degraded
    assert await kube.get(SECRET, hub.namespace, token_secret_name("replayed")) is None
    assert await kube.get(POD, hub.namespace, "replayed-notebook") is None
    await kube.delete(INSTANCE, hub.namespace, "replayed")
    await _stop(hub, user)


async def test_key_rotation_keeps_running_servers_and_new_ones_use_the_new_key(cluster, hub: Hub):
    kube = Kube(cluster.api)
    user = "erin"
    assert (await hub.api.post(f"/users/{user}")).status_code == 201
    token = await _user_token(hub, user)
    await _start(hub, user)
    before = (await kube.get(INSTANCE, hub.namespace, instance_name(user)))["spec"]

    ring = await keys.rotate(kube, hub.namespace)
    await _start(hub, user, "after")

    after = (await kube.get(INSTANCE, hub.namespace, instance_name(user, "after")))["spec"]
    assert after["sealedApiToken"]["keyId"] == ring.current != before["sealedApiToken"]["keyId"]
    assert (await _through_proxy(hub, user, token)).status_code == 200
    assert (await _through_proxy(hub, user, token, "after")).status_code == 200
    await _stop(hub, user, "after")
    await _stop(hub, user)
