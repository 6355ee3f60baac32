"""JupyternetesSpawner's pure parts: names, profiles, the options form, state, progress."""

from __future__ import annotations

import pytest
from tornado import web

from jupyternetes_ssa.spawner import JupyternetesSpawner, _progress_event, instance_name

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


def test_the_chosen_profile_or_the_default_one():
    spawner = JupyternetesSpawner(profiles=PROFILES)
    assert spawner.chosen_profile()["slug"] == "gpu"
    spawner.user_options = {"profile": "small"}
    assert spawner.chosen_profile()["slug"] == "small"


def test_a_profile_not_in_the_list_is_refused():
    spawner = JupyternetesSpawner(profiles=PROFILES)
    spawner.user_options = {"profile": "root-shell"}
    with pytest.raises(web.HTTPError) as refused:
        spawner.chosen_profile()
    assert refused.value.status_code == 400
    assert "small, gpu" in refused.value.log_message


def test_no_profiles_means_no_form_and_no_choice():
    spawner = JupyternetesSpawner()
    assert spawner.options_form == ""
    assert spawner.chosen_profile() == {}


def test_the_options_form_escapes_names_and_preselects_the_default():
    form = JupyternetesSpawner(profiles=PROFILES).options_form
    assert "Small &lt;cpu&gt;" in form
    assert '<option value="gpu" selected>' in form
    assert JupyternetesSpawner().options_from_form({"profile": ["gpu"]}) == {"profile": "gpu"}


def test_state_round_trips_and_clears():
    spawner = JupyternetesSpawner()
    spawner.load_state({"instance_name": "abc", "instance_namespace": "jhub"})
    assert spawner.get_state() == {"instance_name": "abc", "instance_namespace": "jhub"}
    spawner.clear_state()
    assert spawner.get_state() == {}


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
            60,
            "ImagePullBackOff",
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
