"""JupyternetesSpawner's pure parts: names, profiles, the options form, state, progress."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from tornado import web

from jupyternetes_ssa.spawner import (
    JupyternetesSpawner,
    SpawnFailed,
    _exit_status,
    _progress_event,
    instance_name,
)

PROFILES = [
    {"slug": "small", "display_name": "Small <cpu>", "description": "2 cores"},
    {"slug": "gpu", "display_name": "GPU", "template_name": "gpu", "default": True},
]


def test_the_default_servers_name_is_the_originals():
    assert instance_name("jovyan") == "8dc366d8a0f05869bfdb6e7eb3d83f65"


def test_named_servers_never_collide_with_each_other_or_the_default_one():
    names = {
        instance_name("ann"),
        instance_name("ann", "a"),
        instance_name("ann", "b"),
        instance_name("ann/a"),
    }
    assert len(names) == 4
    assert all(len(n) == 32 and n.isalnum() and n.islower() for n in names)


async def test_the_chosen_profile_or_the_default_one():
    spawner = JupyternetesSpawner(profiles=PROFILES)
    assert (await spawner._choose({})).slug == "gpu"
    assert (await spawner._choose({"profile": "small"})).slug == "small"


async def test_a_profile_not_in_the_list_is_refused_with_400():
    spawner = JupyternetesSpawner(profiles=PROFILES)
    with pytest.raises(web.HTTPError) as refused:
        await spawner._choose({"profile": "root-shell"})
    assert refused.value.status_code == 400
    assert "small, gpu" in refused.value.log_message


async def test_a_kubespawner_override_is_a_configuration_error_not_a_users_fault():
    spawner = JupyternetesSpawner(profile_list=[{"display_name": "X", "kubespawner_override": {}}])
    with pytest.raises(web.HTTPError) as refused:
        await spawner._choose({})
    assert refused.value.status_code == 500
    assert "JupyterNotebookTemplate" in refused.value.log_message


async def test_no_profiles_means_no_form_and_no_choice():
    spawner = JupyternetesSpawner()
    assert spawner.options_form == ""
    choice = await spawner._choose({"profile": "anything"})
    assert choice.slug == "" and choice.variables == {}


async def test_the_form_uses_kubespawners_field_names_and_refuses_what_is_not_offered():
    spawner = JupyternetesSpawner(profiles=PROFILES)
    form = spawner.options_form
    assert "Small &lt;cpu&gt;" in form
    assert 'name="profile" value="gpu" checked' in form
    assert await spawner.run_options_from_form({"profile": ["gpu"]}) == {"profile": "gpu"}
    with pytest.raises(web.HTTPError) as refused:
        await spawner.run_options_from_form({"profile": ["root-shell"]})
    assert refused.value.status_code == 400


async def test_a_callable_profile_list_is_rendered_per_user():
    async def per_user(spawner):
        return [{"display_name": f"For {spawner.template_name}"}]

    spawner = JupyternetesSpawner(profile_list=per_user, template_name="t1")
    assert "For t1" in await spawner.get_options_form()
    assert (await spawner._choose({})).slug == "for-t1"


def test_state_round_trips_and_clears():
    spawner = JupyternetesSpawner()
    state = {"instance_name": "abc", "instance_namespace": "jhub", "template": {"name": "t"}}
    spawner.load_state(state)
    assert spawner.get_state() == state
    spawner.clear_state()
    assert spawner.get_state() == {"instance_namespace": "jhub", "template": {"name": "t"}}


@pytest.mark.parametrize(
    ("status", "progress", "words"),
    [
        (None, 5, "Requesting"),
        ({}, 10, "Waiting for the reconciler"),
        ({"podsProvisioned": "Pending", "conditions": []}, 30, "Creating storage and pod"),
        (
            {
                "podsProvisioned": "Completed",
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "True",
                        "message": "pod notebook: ImagePullBackOff",
                    }
                ],
            },
            35,
            "ImagePullBackOff",
        ),
        (
            {
                "podsProvisioned": "Completed",
                "pods": {"notebook": {"parameters": {"lastEvent": "Pulling: image x"}}},
                "conditions": [
                    {"type": "Progressing", "status": "True", "message": "pod notebook: Pulling"}
                ],
            },
            50,
            "Pod starting: pod notebook: Pulling",
        ),
        ({"conditions": [{"type": "Ready", "status": "True"}]}, 100, "Server ready"),
        (
            {"conditions": [{"type": "Degraded", "status": "True", "message": "no template"}]},
            90,
            "Error: no template",
        ),
    ],
)
def test_progress_events_follow_the_status(status, progress, words):
    instance = None if status is None else {"metadata": {"name": "x"}, "status": status}
    event = _progress_event(instance)
    assert event["progress"] == progress
    assert words in event["message"]


class Watch:
    """The shared watch's interface over a plain dict (the logic under test is the spawner's)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.deleted: dict[str, str] = {}
        self._events: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    def instance(self, name: str) -> dict | None:
        return self.objects.get(name)

    def deliver(self, name: str, obj: dict | None, deleted_uid: str = "") -> None:
        if obj is None:
            self.objects.pop(name, None)
            self.deleted[name] = deleted_uid
        else:
            self.objects[name] = obj
        self._events.pop(name, asyncio.Event()).set()


def ready(uid: str, address: str = "127.1.0.9") -> dict:
    pod = {"state": "Running", "podAddress": address, "portNumber": 8888}
    return {
        "metadata": {"name": "n", "uid": uid, "generation": 1},
        "status": {
            "observedGeneration": 1,
            "pods": {"notebook": pod},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


async def test_an_instance_the_watch_has_not_delivered_yet_is_waited_for_not_taken_as_deleted():
    spawner, watch = JupyternetesSpawner(), Watch()
    spawner.instance_name = "n"
    watch.objects["n"] = ready("leftover")  # an older incarnation, still in the cache
    waiting = asyncio.create_task(spawner._wait_ready(watch, "mine"))
    await asyncio.sleep(0)
    watch.deliver("n", None, deleted_uid="leftover")
    await asyncio.sleep(0)
    assert not waiting.done()
    watch.deliver("n", ready("mine"))
    assert await waiting == "http://127.1.0.9:8888"


async def test_an_instance_deleted_while_starting_fails_the_start():
    spawner, watch = JupyternetesSpawner(), Watch()
    spawner.instance_name = "n"
    watch.deleted["n"] = "mine"
    with pytest.raises(SpawnFailed, match="deleted while starting"):
        await spawner._wait_ready(watch, "mine")


@pytest.mark.parametrize(
    ("state", "degraded", "phase", "expected"),
    [
        ("Running", "AsExpected", "Running", None),
        ("Missing", "AsExpected", "Pending", None),  # being re-created
        ("Terminating", "AsExpected", "Terminating", None),
        ("Missing", "ApplyFailed", "Error", None),  # may pass
        ("Running", "TemplateNotFound", "Error", None),  # still serving
        ("Missing", "TemplateNotFound", "Error", 1),  # cannot come back
        ("Failed", "ItemFailed", "Failed", 1),
        ("Succeeded", "ItemFailed", "Failed", 0),
        ("Running", "AsExpected", "Purging", 1),
        ("Missing", "SealingKeyUnknown", "Error", 1),  # its token cannot be opened any more
        ("Missing", "NameConflict", "Error", 1),
        ("Running", "SealingKeyUnknown", "Error", None),  # still serving
    ],
)
def test_poll_drops_a_server_only_when_it_cannot_run_again(state, degraded, phase, expected):
    status = {
        "phase": phase,
        "conditions": [{"type": "Degraded", "status": "True", "reason": degraded}],
    }
    assert _exit_status(status, {"state": state}) == expected


def test_a_server_is_looked_for_where_it_started_and_purged_where_its_pvcs_are():
    spawner = JupyternetesSpawner(namespace="new")
    spawner.load_state({"instance_name": "abc", "instance_namespace": "old"})
    assert spawner._namespace() == "old"
    spawner.clear_state()
    assert spawner._namespace() == "new", "a new start goes where the setting says"
    assert spawner.get_state()["instance_namespace"] == "old", "delete_forever purges there"


async def test_progress_never_shows_a_leftovers_ready_and_only_rises():
    spawner, watch = JupyternetesSpawner(), Watch()
    spawner.user = SimpleNamespace(name="n")
    watch.objects[instance_name("n")] = ready("leftover")
    events = spawner._progress(watch)
    assert (await anext(events))["message"] == "Requesting a notebook server"
    spawner._uid = "mine"
    mine = ready("mine")
    mine["status"]["conditions"] = [{"type": "Progressing", "status": "True", "message": "x"}]
    mine["status"]["podsProvisioned"] = "Completed"
    mine["status"]["pods"]["notebook"]["parameters"] = {"lastEvent": "Started: container"}
    watch.deliver(instance_name("n"), mine)
    assert (await anext(events))["progress"] == 80
    mine = ready("mine")
    mine["status"]["conditions"] = [
        {"type": "Degraded", "status": "False"},
        {"type": "Progressing", "status": "True", "message": "back to pending"},
    ]
    mine["status"]["podsProvisioned"] = "Pending"  # would be 30: progress must not fall back
    watch.deliver(instance_name("n"), mine)
    assert (await anext(events))["progress"] == 80
    watch.deliver(instance_name("n"), ready("mine"))
    assert (await anext(events)) == {"progress": 100, "message": "Server ready"}


@pytest.mark.parametrize(
    "reason",
    ["KindNotAllowed", "TemplateNotAllowed", "TemplateNotFound", "RenderFailed", "ApplyFailed"],
)
def test_a_status_no_waiting_can_cure_fails_the_start_with_its_message(reason):
    instance = ready("mine")
    instance["status"]["conditions"] = [
        {"type": "Degraded", "status": "True", "reason": reason, "message": "says why"}
    ]
    with pytest.raises(SpawnFailed, match=f"{reason}: says why") as failed:
        JupyternetesSpawner()._ready_url(instance, "mine")
    assert failed.value.jupyterhub_message == str(failed.value)  # what the user is shown


def test_a_transient_or_stale_status_does_not_fail_the_start():
    instance = ready("mine")
    instance["status"]["conditions"] = [
        {"type": "Degraded", "status": "True", "reason": "Purging", "message": "old"}
    ]
    instance["metadata"]["generation"] = 2  # not observed yet: the reconciler has not seen it
    assert JupyternetesSpawner()._ready_url(instance, "mine") is None
