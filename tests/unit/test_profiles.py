"""kubespawner-compatible profile_list: normalising, choosing, refusing, the form."""

from __future__ import annotations

import pytest

from jupyternetes_ssa.profiles import (
    ProfileError,
    choose,
    form_html,
    initialize,
    options_from_form,
    resolve,
)

# A z2jh-style profile_list, with kubespawner_override turned into template and variables.
PROFILE_LIST = [
    {"display_name": "Small server", "description": "2 cores"},
    {
        "display_name": "Data science",
        "slug": "ds",
        "default": True,
        "template_name": "ds-template",
        "variables": {"cpu": 4},
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    "minimal": {"display_name": "Minimal", "variables": {"image": "minimal:1"}},
                    "scipy": {
                        "display_name": "SciPy",
                        "default": True,
                        "variables": {"image": "scipy:1"},
                    },
                },
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Image name",
                    "validation_regex": r"^quay\.io/jupyter/[a-z-]+:[0-9.]+$",
                    "validation_message": "only quay.io/jupyter images",
                    "variables": {"image": "{value}"},
                },
            },
            "gpu": {"choices": {"none": {}, "one": {"template_name": "gpu-template"}}},
        },
    },
]


def test_initialize_sets_slugs_and_defaults_like_kubespawner():
    profiles = initialize(PROFILE_LIST)
    assert [p["slug"] for p in profiles] == ["small-server", "ds"]
    assert profiles[1]["profile_options"]["gpu"]["choices"]["none"]["default"] is True
    image = profiles[1]["profile_options"]["image"]["unlisted_choice"]
    assert image["display_name_in_choices"] == "Other..."
    assert initialize([{"display_name": "A"}])[0]["default"] is True
    assert PROFILE_LIST[0].get("slug") is None, "the admin's list is not modified"


def test_the_default_profile_and_choices():
    chosen = choose(initialize(PROFILE_LIST), {})
    assert chosen.slug == "ds"
    assert chosen.template_name == "ds-template"
    assert chosen.variables == {
        "jupyterhub.profile": "ds",
        "cpu": "4",
        "jupyterhub.profile.image": "scipy",
        "image": "scipy:1",
        "jupyterhub.profile.gpu": "none",
    }


def test_a_choice_sets_variables_and_may_pick_a_template():
    chosen = choose(initialize(PROFILE_LIST), {"profile": "ds", "image": "minimal", "gpu": "one"})
    assert chosen.variables["image"] == "minimal:1"
    assert chosen.template_name == "gpu-template"


def test_an_unlisted_choice_is_validated_against_the_whole_regex():
    profiles = initialize(PROFILE_LIST)
    ok = choose(profiles, {"profile": "ds", "image--unlisted-choice": "quay.io/jupyter/r:1.0"})
    assert ok.variables["image"] == "quay.io/jupyter/r:1.0"
    assert ok.variables["jupyterhub.profile.image"] == "quay.io/jupyter/r:1.0"
    for bad in ("quay.io/jupyter/r:1.0; rm -rf /", "evil.io/x:1", ""):
        with pytest.raises(ProfileError) as refused:
            choose(
                profiles,
                {"profile": "ds", "image": "unlisted-choice", "image--unlisted-choice": bad},
            )
        assert "only quay.io/jupyter images" in str(refused.value) or "enter a value" in str(
            refused.value
        )
        assert not refused.value.config


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"profile": "root"}, "unknown profile 'root'; choose one of: small-server, ds"),
        (
            {"profile": "ds", "image": "latest"},
            "'latest' is not offered; choose one of: minimal, scipy",
        ),
        ({"profile": "ds", "gpu--unlisted-choice": "8"}, "offers no other value"),
    ],
)
def test_a_choice_not_offered_is_refused_with_a_message(options, words):
    with pytest.raises(ProfileError) as refused:
        choose(initialize(PROFILE_LIST), options)
    assert words in str(refused.value)


def test_a_kubespawner_override_or_an_empty_option_is_a_configuration_error():
    with pytest.raises(ProfileError, match="kubespawner_override") as err:
        initialize([{"display_name": "A", "kubespawner_override": {"image": "x"}}])
    assert err.value.config
    with pytest.raises(ProfileError, match="offers no choice"):
        initialize([{"display_name": "A", "profile_options": {"x": {}}}])


async def test_a_dict_is_taken_in_key_order_and_a_callable_may_be_async():
    assert [p["slug"] for p in await resolve({"b": {"slug": "b"}, "a": {"slug": "a"}}, None)] == [
        "a",
        "b",
    ]

    async def per_group(spawner):
        return [{"slug": spawner}]

    assert (await resolve(per_group, "gpu-users"))[0]["slug"] == "gpu-users"
    assert (await resolve(lambda s: [{"slug": "sync"}], None))[0]["slug"] == "sync"
    with pytest.raises(ProfileError, match="not str"):
        await resolve(lambda s: "nope", None)


def test_the_form_has_kubespawners_field_names_and_reads_back():
    form = form_html(initialize(PROFILE_LIST))
    assert '<input type="radio" name="profile" value="ds" checked>' in form
    assert '<select name="profile-option-ds--image">' in form
    assert '<option value="scipy" selected>' in form
    assert '<option value="unlisted-choice">Other...</option>' in form
    assert 'name="profile-option-ds--image--unlisted-choice"' in form
    formdata = {
        "profile": ["ds"],
        "profile-option-ds--image": ["unlisted-choice"],
        "profile-option-ds--image--unlisted-choice": ["quay.io/jupyter/r:1.0"],
        "profile-option-small-server--x": ["ignored: another profile's field"],
    }
    assert options_from_form(formdata) == {
        "profile": "ds",
        "image": "unlisted-choice",
        "image--unlisted-choice": "quay.io/jupyter/r:1.0",
    }


def test_choice_keys_are_compared_as_the_strings_a_form_or_json_sends():
    profiles = initialize([{"slug": "g", "profile_options": {"n": {"choices": {1: {}, 4: {}}}}}])
    assert choose(profiles, {"profile": "g", "n": "4"}).variables["jupyterhub.profile.n"] == "4"


def test_the_form_escapes_what_admins_wrote():
    form = form_html(initialize([{"slug": 'a"b', "display_name": "<b>x</b>"}]))
    assert "&lt;b&gt;x&lt;/b&gt;" in form and 'value="a&quot;b"' in form
