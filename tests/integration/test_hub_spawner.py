"""JupyternetesSpawner as a new site would run it: a real JupyterHub (and its proxy) with the
spawner's default settings, examples/hub-template.yaml, user names of every shape, a per-group
profile_list, and the hub and the reconciler stopped and started under live and starting servers
(the hub keeps its sqlite database across restarts, as a hub pod keeps its PVC)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
import yaml
from reconcile_helpers import EXAMPLES, put
from test_jupyterhub import free_port, hub_identity, hub_namespace  # noqa: F401 (fixtures)

from jupyternetes_ssa.kube import INSTANCE, POD, PVC, Kube, Resource
from jupyternetes_ssa.local_cluster import wait_for
from jupyternetes_ssa.names import is_label_value
from jupyternetes_ssa.spawner import InstanceWatch, JupyternetesSpawner, instance_name

pytestmark = pytest.mark.integration
NETWORK_POLICY = Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")

# A per-group profile_list, as a z2jh site writes it, with kubespawner_override turned into
# template and variables. Whether "alt" is offered at all is read from a file at each call, so a
# test can take a profile out of the config while the hub runs.
PROFILE_LIST = """
import os

def profile_list(spawner):
    profiles = [{"display_name": "Standard", "slug": "standard", "default": True}]
    if not os.path.exists("no-alt"):
        profiles.append({"display_name": "Alt", "slug": "alt", "variables": {"flavor": "alt"}})
    if any(g.name == "gpu-users" for g in spawner.user.groups):
        profiles.append({
            "display_name": "GPU",
            "slug": "gpu",
            "profile_options": {
                "size": {
                    "display_name": "Size",
                    "choices": {"small": {"variables": {"gpu.count": "1"}},
                                "large": {"variables": {"gpu.count": "4"}}},
                },
            },
        })
    if os.path.exists("broken"):
        profiles.append({"display_name": "Broken", "slug": "broken",
                         "template_name": "no-such-template"})
    return profiles

c.JupyternetesSpawner.profile_list = profile_list
"""


class Process:
    """A child process that can be stopped and started again with the same command."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str], cwd: Path | None = None):
        self.argv, self.log, self.env, self.cwd = argv, log, env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class Hub:
    def __init__(self, workdir: Path, namespace: str, kubeconfig: Path):
        self.workdir, self.namespace = workdir, namespace
        token = secrets.token_hex(16)
        proxy_port = free_port()
        self.url = f"http://127.0.0.1:{proxy_port}"
        self.log = workdir / "jupyterhub.log"
        chp = str(Path(sys.executable).parent / "configurable-http-proxy")
        (workdir / "jupyterhub_config.py").write_text(
            textwrap.dedent(f"""
            c.JupyterHub.ip = "127.0.0.1"
            c.JupyterHub.port = {proxy_port}
            c.JupyterHub.hub_ip = "127.0.0.1"
            c.JupyterHub.hub_port = {free_port()}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
            c.ConfigurableHTTPProxy.command = [{chp!r}]
            c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
            c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
            c.JupyterHub.cleanup_servers = False  # servers outlive a hub restart (z2jh's too)
            c.JupyterHub.allow_named_servers = True
            c.JupyterHub.authenticator_class = "dummy"  # users log in to test the spawn form
            c.DummyAuthenticator.password = "pw"
            c.JupyterHub.services = [{{"name": "e2e", "api_token": "{token}"}}]
            c.JupyterHub.load_roles = [{{"name": "e2e", "services": ["e2e"],
                "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens",
                           "access:servers"]}}]
            c.JupyterHub.spawner_class = "jupyternetes"
            c.JupyternetesSpawner.namespace = "{namespace}"
            c.JupyternetesSpawner.template_name = "hub-template"
            c.JupyternetesSpawner.kubeconfig = "{kubeconfig}"
            c.JupyternetesSpawner.start_timeout = 120  # CPU contention on the test machine
            c.JupyternetesSpawner.http_timeout = 60
            c.JupyternetesSpawner.poll_interval = 2  # JupyterHub's; the test need not wait 30 s
            """)
            + PROFILE_LIST
        )
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        env.pop("KUBECONFIG", None)  # the hub must use nothing but its own narrow identity
        argv = [sys.executable, "-m", "jupyterhub", "-f", str(workdir / "jupyterhub_config.py")]
        self.process = Process(argv, self.log, env, cwd=workdir)
        self.api = httpx.AsyncClient(
            base_url=f"{self.url}/hub/api", timeout=60, headers={"Authorization": f"token {token}"}
        )

    async def start(self) -> None:
        self.process.start()

        async def up() -> bool:
            return (await self.api.get("/")).status_code == 200

        await wait_for(up, timeout=90, message=f"JupyterHub up (log: {self.log})")

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
async def reconciler(cluster, hub_namespace: str, tmp_path_factory) -> AsyncIterator[Process]:  # noqa: F811
    log = tmp_path_factory.mktemp("reconciler") / "reconciler.log"
    argv = [sys.executable, "-m", "jupyternetes_ssa", "reconcile", "-n", hub_namespace]
    argv += ["--health-port", "0", "--allow-kind", "NetworkPolicy.networking.k8s.io"]
    argv += ["--key-namespace", hub_namespace]  # the spawner reads the public key there
    # Progress every 0.2 s (default 3 s): the local node starts a pod within a second, and the
    # progress test wants to see its steps.
    argv += ["--status-interval", "0.2"]
    process = Process(argv, log, dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def hub(cluster, hub_namespace, hub_identity, reconciler, tmp_path_factory):  # noqa: F811
    template = yaml.safe_load((EXAMPLES / "hub-template.yaml").read_text())
    template["metadata"]["namespace"] = hub_namespace
    container = template["spec"]["pods"][0]["spec"]["containers"][0]
    if os.geteuid() == 0:  # CI runs as root here; jupyter_server refuses root unless told
        container["args"] = ["--allow-root"]
    await put(Kube(cluster.api), template)
    hub = Hub(tmp_path_factory.mktemp("hub"), hub_namespace, hub_identity)
    await hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        await hub.api.aclose()
        print(hub.log.read_text()[-6000:])


def _path(user: str, server: str = "") -> str:
    user = quote(user, safe="")
    return f"/users/{user}/servers/{quote(server, safe='')}" if server else f"/users/{user}/server"


async def _model(hub: Hub, user: str, server: str = "") -> dict:
    response = await hub.api.get(f"/users/{quote(user, safe='')}")
    return ((response.json() if response.status_code == 200 else {}).get("servers") or {}).get(
        server
    ) or {}


async def _ready(hub: Hub, user: str, server: str = "") -> dict:
    async def ready() -> dict | None:
        model = await _model(hub, user, server)
        return model if model.get("ready") else None

    return await wait_for(
        ready, timeout=180, interval=0.5, message=f"{user}/{server} ready (log: {hub.log})"
    )


async def _start(hub: Hub, user: str, server: str = "", **options: str) -> dict:
    response = await hub.api.post(_path(user, server), json=options or None)
    assert response.status_code in (201, 202), response.text
    return await _ready(hub, user, server)


async def _stop(hub: Hub, user: str, server: str = "") -> None:
    response = await hub.api.delete(_path(user, server))
    assert response.status_code in (202, 204), response.text

    async def stopped() -> bool:
        return not await _model(hub, user, server)

    await wait_for(stopped, timeout=120, interval=0.5, message=f"{user}/{server} stopped")


async def _new_user(hub: Hub, user: str) -> str:
    response = await hub.api.post(f"/users/{quote(user, safe='')}")
    assert response.status_code == 201, response.text
    response = await hub.api.post(f"/users/{quote(user, safe='')}/tokens", json={"note": "t"})
    return response.json()["token"]


async def _status(url: str, token: str) -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{url}api/status", headers={"Authorization": f"token {token}"})
        return response.status_code


async def _direct(kube: Kube, hub: Hub, user: str, token: str, server: str = "") -> int:
    """The server at its pod's own address (the Python proxy re-quotes `@`, see NOTES)."""
    instance = await kube.get(INSTANCE, hub.namespace, instance_name(user, server))
    pod = instance["status"]["pods"]["notebook"]
    prefix = instance["spec"]["variables"]["jupyterhub.service_prefix"]
    return await _status(f"http://{pod['podAddress']}:{pod['portNumber']}{prefix}", token)


async def _proxied(hub: Hub, user: str, token: str) -> int:
    return await _status(f"{hub.url}/user/{user}/", token)


@pytest.mark.parametrize(
    "user",
    ["alice@example.com", "ünïcødé-ユーザー", "a" * 150 + "@example.com"],
    ids=["e-mail", "unicode", "long"],
)
async def test_default_settings_start_any_user_name_on_the_shipped_template(cluster, hub, user):
    kube = Kube(cluster.api)
    token = await _new_user(hub, user)

    await _start(hub, user)

    instance = await kube.get(INSTANCE, hub.namespace, instance_name(user))
    variables = instance["spec"]["variables"]
    assert variables["jupyterhub.user.name"] == user
    pod_name = instance["status"]["pods"]["notebook"]["resourceName"]
    pod = await kube.get(POD, hub.namespace, pod_name)
    labels = pod["metadata"]["labels"]
    assert labels["hub.jupyter.org/username"] == variables["jupyterhub.user.label"]
    assert pod["metadata"]["annotations"]["hub.jupyter.org/username"] == user
    assert all(is_label_value(v) for v in labels.values())
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    policy = await kube.get(NETWORK_POLICY, hub.namespace, f"{instance_name(user)}-network")
    assert "169.254.169.254/32" in str(policy["spec"]["egress"])
    assert await _direct(kube, hub, user, token) == 200
    await _stop(hub, user)


async def test_per_group_profiles_named_servers_and_refused_choices(cluster, hub):
    kube = Kube(cluster.api)
    user = "dora"
    await _new_user(hub, user)

    refused = await hub.api.post(_path(user, "big"), json={"profile": "gpu"})
    assert refused.status_code == 400, refused.text
    assert "unknown profile 'gpu'; choose one of: standard, alt" in refused.json()["message"]
    assert await kube.get(INSTANCE, hub.namespace, instance_name(user, "big")) is None

    assert (await hub.api.post("/groups/gpu-users", json={"users": [user]})).status_code == 201
    refused = await hub.api.post(_path(user, "big"), json={"profile": "gpu", "size": "huge"})
    assert refused.status_code == 400, refused.text
    assert "'huge' is not offered; choose one of: small, large" in refused.json()["message"]

    await _start(hub, user, "big", profile="gpu", size="large")
    await _start(hub, user)

    big = await kube.get(INSTANCE, hub.namespace, instance_name(user, "big"))
    assert big["spec"]["variables"]["gpu.count"] == "4"
    assert big["spec"]["variables"]["jupyterhub.profile.size"] == "large"
    assert big["spec"]["variables"]["jupyterhub.server.name"] == "big"
    default = await kube.get(INSTANCE, hub.namespace, instance_name(user))
    assert default["spec"]["variables"]["jupyterhub.profile"] == "standard"
    await _stop(hub, user, "big")
    await _stop(hub, user)


async def test_the_spawn_form_offers_kubespawners_fields_and_refuses_with_400(hub):
    user = "gina"
    await _new_user(hub, user)
    async with httpx.AsyncClient(base_url=hub.url, timeout=60) as browser:  # a user's browser
        login = await browser.get("/hub/login")
        await browser.post(
            "/hub/login",
            data={"username": user, "password": "pw", "_xsrf": _xsrf(login.text)},
        )
        form = await browser.get(f"/hub/spawn/{user}/f")
        assert form.status_code == 200, form.text[-2000:]
        assert 'name="profile" value="alt"' in form.text

        refused = await browser.post(
            f"/hub/spawn/{user}/f", data={"profile": "gpu", "_xsrf": _xsrf(form.text)}
        )

    assert refused.status_code == 400, refused.text[-2000:]
    assert (
        "unknown profile &#39;gpu&#39;" in refused.text or "unknown profile 'gpu'" in refused.text
    )


def _xsrf(page: str) -> str:
    found = re.search(r'(?:name="_xsrf" value=|xsrf_token: )"([^"]+)"', page)
    assert found, page[-2000:]
    return found.group(1)


async def test_a_fatal_status_fails_the_spawn_at_once_with_its_message(cluster, hub):
    kube = Kube(cluster.api)
    user = "hank"
    await _new_user(hub, user)
    (hub.workdir / "broken").touch()
    try:
        started = time.monotonic()
        response = await hub.api.post(_path(user), json={"profile": "broken"})
        message = response.text
        if response.status_code == 202:  # slower than JupyterHub's slow_spawn_timeout (10 s)
            message = (await _progress(hub, user))[-1]["message"]
        else:
            assert response.status_code == 500, response.text

        assert "TemplateNotFound" in message and "no-such-template" in message, message
        assert time.monotonic() - started < 60  # not the start_timeout (120 s)
        await wait_for(
            lambda: _gone(kube, INSTANCE, hub.namespace, instance_name(user)),
            timeout=60,
            message="the failed instance is deleted",
        )
    finally:
        (hub.workdir / "broken").unlink()


async def _progress(hub: Hub, user: str) -> list[dict]:
    """The spawn's progress events as JupyterHub's event stream sends them, to the end."""
    events = []
    async with hub.api.stream("GET", f"{_path(user)}/progress", timeout=180) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    return events


async def _gone(kube: Kube, res, namespace: str, name: str) -> bool:
    return await kube.get(res, namespace, name) is None


async def _pod_address(kube: Kube, namespace: str, user: str) -> tuple[str, ...]:
    """(pod uid, address) once the instance reports its pod running, else ()."""
    instance = await kube.get(INSTANCE, namespace, instance_name(user))
    entry = ((instance or {}).get("status") or {}).get("pods", {}).get("notebook", {})
    if entry.get("state") != "Running":
        return ()
    pod = await kube.get(POD, namespace, entry["resourceName"])
    return (pod["metadata"]["uid"], entry["podAddress"]) if pod else ()


async def _move_pod(kube: Kube, namespace: str, user: str, reconciler: Process) -> str:
    """Re-create the server's pod behind the hub at another address: with the reconciler
    stopped, delete the pod and let a filler pod take its IP (the fake node reuses freed IPs);
    then the reconciler makes a new pod, elsewhere. Returns (old uid, old address)."""
    old = await _pod_address(kube, namespace, user)
    instance = await kube.get(INSTANCE, namespace, instance_name(user))
    pod_name = instance["status"]["pods"]["notebook"]["resourceName"]
    reconciler.stop()
    await kube.delete(POD, namespace, pod_name)
    await wait_for(lambda: _gone(kube, POD, namespace, pod_name), timeout=60, message="pod gone")
    filler = f"filler-{secrets.token_hex(3)}"
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": filler, "namespace": namespace}}
    body["spec"] = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    await kube.create(body, field_manager="kubectl-create")

    async def has_ip() -> str | None:
        return ((await kube.get(POD, namespace, filler)) or {}).get("status", {}).get("podIP")

    await wait_for(has_ip, timeout=60, message="the filler pod runs")
    return old


async def _moved(kube: Kube, namespace: str, user: str, old: tuple[str, ...]) -> str:
    async def recreated() -> str | None:
        now = await _pod_address(kube, namespace, user)
        return now[1] if now and now[0] != old[0] else None

    address = await wait_for(recreated, timeout=150, interval=0.5, message="pod re-created")
    assert address != old[1], "the new pod must have another address for this test"
    return address


async def test_a_pod_recreated_behind_the_hub_is_followed_running_and_across_a_restart(
    cluster, hub, reconciler
):
    kube = Kube(cluster.api)
    user = "erin"
    token = await _new_user(hub, user)
    await _start(hub, user)
    assert await _proxied(hub, user, token) == 200

    old = await _move_pod(kube, hub.namespace, user, reconciler)
    reconciler.start()
    address = await _moved(kube, hub.namespace, user, old)

    async def followed() -> bool:
        model = await _model(hub, user)
        return model.get("ready") and await _proxied(hub, user, token) == 200

    await wait_for(followed, timeout=120, interval=1, message=f"the hub follows to {address}")

    hub.stop()
    old = await _move_pod(kube, hub.namespace, user, reconciler)
    reconciler.start()  # the new pod's server is ready only once the hub is back
    await hub.start()
    address = await _moved(kube, hub.namespace, user, old)

    await wait_for(followed, timeout=150, interval=1, message=f"restarted hub finds {address}")
    await _stop(hub, user)


async def test_live_servers_survive_a_hub_restart_while_the_reconciler_is_down(
    cluster, hub, reconciler
):
    user = "ivan"
    token = await _new_user(hub, user)
    await _start(hub, user)

    reconciler.stop()
    try:
        hub.stop()
        await hub.start()
        model = await _ready(hub, user)
        assert model["ready"]
        assert await _proxied(hub, user, token) == 200
    finally:
        reconciler.start()
    await _stop(hub, user)


async def test_a_hub_restart_mid_spawn_finds_the_server_it_did_not_save(cluster, hub, reconciler):
    kube = Kube(cluster.api)
    user = "frank"
    token = await _new_user(hub, user)
    reconciler.stop()  # the spawn cannot finish before the hub goes down
    try:
        response = await hub.api.post(_path(user))
        assert response.status_code == 202, response.text
        await wait_for(
            lambda: kube.get(INSTANCE, hub.namespace, instance_name(user)),
            timeout=60,
            message="the hub applied the instance",
        )
        hub.stop()
    finally:
        reconciler.start()
    await hub.start()

    await _ready(hub, user)
    assert await _proxied(hub, user, token) == 200
    await _stop(hub, user)


async def test_deleting_a_user_is_quick_without_the_reconciler_and_when_its_profile_is_gone(
    cluster, hub, reconciler
):
    kube = Kube(cluster.api)
    user = "judy"
    await _new_user(hub, user)
    await _start(hub, user, profile="alt")
    pvc = f"{instance_name(user)}-home"
    assert await kube.get(PVC, hub.namespace, pvc) is not None
    await _stop(hub, user)
    (hub.workdir / "no-alt").touch()  # the admin removed the profile the user last ran
    reconciler.stop()
    try:
        started = time.monotonic()
        response = await hub.api.delete(f"/users/{user}")
        assert response.status_code == 204, response.text
        assert time.monotonic() - started < 40  # purge_wait (10 s), not delete_timeout (120 s)
        purging = await kube.get(INSTANCE, hub.namespace, instance_name(user))
        assert purging["spec"]["purge"] is True
        # The name goes to someone new before the purge ran: their start must not cancel it
        # and get the deleted user's volume.
        await _new_user(hub, user)
        await hub.api.post(_path(user))
        await wait_for(
            lambda: "is still being deleted" in hub.log.read_text(),
            timeout=60,
            message="the start refused while the purge is pending",
        )
        assert not (await _model(hub, user)).get("ready")
        still = await kube.get(INSTANCE, hub.namespace, instance_name(user))
        assert still["spec"]["purge"] is True
    finally:
        reconciler.start()
        (hub.workdir / "no-alt").unlink()
    await wait_for(lambda: _gone(kube, PVC, hub.namespace, pvc), timeout=120, message="PVC purged")
    await wait_for(
        lambda: _gone(kube, INSTANCE, hub.namespace, instance_name(user)),
        timeout=150,
        message="the purged instance deleted by the hub's background task",
    )


async def test_progress_tells_the_story_from_real_events_with_rising_percentages(cluster, hub):
    kube = Kube(cluster.api)
    user = "kate"
    await _new_user(hub, user)
    spawn = asyncio.create_task(hub.api.post(_path(user)))

    async def pending() -> bool:
        return (await _model(hub, user)).get("pending") == "spawn"

    await wait_for(pending, timeout=60, interval=0.1, message="spawn pending")
    events = await _progress(hub, user)
    assert (await spawn).status_code in (201, 202)

    assert events[-1].get("ready") is True, events
    percentages = [e["progress"] for e in events if "progress" in e]
    assert percentages == sorted(percentages), events
    steps = ("Scheduled: ", "Pulled: ", "Created: ", "Started: ")  # scheduler's and node's events
    assert any(step in e.get("message", "") for e in events for step in steps), events
    instance = await kube.get(INSTANCE, hub.namespace, instance_name(user))
    # kubectl describe jni: a first start is told by the status (Events tell later changes)
    ready = next(c for c in instance["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "PodsReady"), instance["status"]
    assert instance["status"]["pods"]["notebook"]["state"] == "Running", instance["status"]
    await _stop(hub, user)


async def test_a_failing_watch_never_drops_a_running_server(cluster, namespace, sa_kubeconfig):
    """The hub's identity cannot list instances (a broken Role; an apiserver it cannot reach
    fails the same list): poll must not call a running server stopped, start must say why."""
    kubeconfig = await sa_kubeconfig([], name="no-rights")
    InstanceWatch.sync_timeout, before = 3.0, InstanceWatch.sync_timeout
    try:
        spawner = JupyternetesSpawner(namespace=namespace, kubeconfig=str(kubeconfig))
        spawner.user = SimpleNamespace(name="lee", id=7)
        assert await spawner.poll() == 0, "never started: nothing to look at"
        spawner.load_state({"instance_name": instance_name("lee"), "instance_namespace": namespace})

        assert await spawner.poll() is None

        with pytest.raises(RuntimeError, match="cannot list JupyterNotebookInstances") as failed:
            await spawner.start()
        assert "examples/hub-rbac.yaml" in str(failed.value)
    finally:
        InstanceWatch.sync_timeout = before
        for key, watch in list(InstanceWatch._shared.items()):
            if key[1] == str(kubeconfig):  # its informer retries forever: end it with the test
                watch._task.cancel()
                del InstanceWatch._shared[key]
