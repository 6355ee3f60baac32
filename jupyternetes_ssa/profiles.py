"""kubespawner-compatible `profile_list`: normalise it, render its form, read the form, and turn a
user's choice into a template and variables. Pure, except that a callable list may be async.

A profile or an option choice says what kubespawner's `kubespawner_override` said with our words:
`template_name`, `template_namespace` and `variables` (strings; they select template
`condition`s). Every choice is also sent as a variable: `jupyterhub.profile` (the slug) and
`jupyterhub.profile.<option>` (the choice's key, or the text of an unlisted choice).

Differences from kubespawner (7.1), all on the side of refusing: a choice that is not offered,
an unlisted value when unlisted choices are off, and an unlisted value that does not match the
whole `validation_regex` are refused with a message (kubespawner checks only the regex's start
and fails later on an unknown choice); a `kubespawner_override` is a configuration error.
"""

from __future__ import annotations

import copy
import html
import inspect
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

UNLISTED = "unlisted-choice"  # kubespawner's select value and user_options suffix
_SLUG = re.compile(r"[^a-z0-9]+")


class ProfileError(ValueError):
    """A choice this user may not make (HTTP 400), or a profile_list that cannot work."""

    def __init__(self, message: str, *, config: bool = False):
        super().__init__(message)
        self.config = config


@dataclass
class Choice:
    """What a user's options resolve to."""

    slug: str = ""
    template_name: str | None = None
    template_namespace: str | None = None
    variables: dict[str, str] = field(default_factory=dict)


def slugify(text: str) -> str:
    """A slug from a display name (python-slugify's result for ASCII-foldable text)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _SLUG.sub("-", folded.lower()).strip("-")


async def resolve(profile_list: Any, spawner: Any) -> list[dict]:
    """The list itself, a dict's values in key order, or what `profile_list(spawner)` returns."""
    if callable(profile_list):
        profile_list = profile_list(spawner)
        if inspect.isawaitable(profile_list):
            profile_list = await profile_list
    return initialize(as_list(profile_list))


def as_list(profile_list: Any) -> list[dict]:
    """A list as it is; a dict's values in sorted-key order (kubespawner 7.1)."""
    if isinstance(profile_list, dict):
        profile_list = [profile_list[k] for k in sorted(profile_list)]
    if not isinstance(profile_list, list | tuple):
        raise ProfileError(
            f"profile_list must give a list of profiles, not {type(profile_list).__name__}",
            config=True,
        )
    return list(profile_list)


def initialize(profile_list: list[dict]) -> list[dict]:
    """A copy with every slug set, one default profile and one default choice per option."""
    profiles = copy.deepcopy(profile_list)
    for index, profile in enumerate(profiles):
        where = f"profile_list[{index}]"
        if not isinstance(profile, dict):
            raise ProfileError(f"{where} must be a dict, not {type(profile).__name__}", config=True)
        if "kubespawner_override" in profile:
            raise ProfileError(
                f"{where} ({profile.get('display_name', '')}): kubespawner_override has no "
                "meaning here; put the pod's settings in a JupyterNotebookTemplate and select "
                "them with template_name and variables",
                config=True,
            )
        profile.setdefault("slug", slugify(str(profile.get("display_name", ""))))
        if not profile["slug"]:
            raise ProfileError(f"{where} needs a slug or a display_name", config=True)
        profile.setdefault("display_name", profile["slug"])
        for name, option in (profile.get("profile_options") or {}).items():
            _initialize_option(f"{where}.profile_options.{name}", option)
    if profiles and not any(p.get("default") for p in profiles):
        profiles[0]["default"] = True
    return profiles


def _initialize_option(where: str, option: dict) -> None:
    choices = option["choices"] = {str(k): c for k, c in (option.get("choices") or {}).items()}
    for key, choice in choices.items():
        if "kubespawner_override" in choice:
            raise ProfileError(
                f"{where}.choices.{key}: kubespawner_override has no meaning here; use "
                "variables (and template conditions)",
                config=True,
            )
    if choices and not any(c.get("default") for c in choices.values()):
        next(iter(choices.values()))["default"] = True
    unlisted = option.setdefault("unlisted_choice", {})
    unlisted.setdefault("enabled", False)
    if unlisted["enabled"]:
        unlisted.setdefault("display_name_in_choices", "Other...")
    if not choices and not unlisted["enabled"]:
        raise ProfileError(f"{where} offers no choice", config=True)


def choose(profiles: list[dict], user_options: dict | None) -> Choice:
    """The template and variables for `user_options`; a choice not offered raises ProfileError."""
    if not profiles:
        return Choice()
    options = user_options or {}
    slug = options.get("profile") or next(p for p in profiles if p.get("default"))["slug"]
    profile = next((p for p in profiles if p["slug"] == slug), None)
    if profile is None:
        offered = ", ".join(p["slug"] for p in profiles)
        raise ProfileError(f"unknown profile {slug!r}; choose one of: {offered}")
    chosen = Choice(slug, profile.get("template_name"), profile.get("template_namespace"))
    chosen.variables = {"jupyterhub.profile": slug, **_strings(profile.get("variables"))}
    for name, option in (profile.get("profile_options") or {}).items():
        value, settings = _option_value(slug, name, option, options)
        chosen.variables[f"jupyterhub.profile.{name}"] = value
        chosen.variables.update(_strings(settings.get("variables"), value))
        chosen.template_name = settings.get("template_name", chosen.template_name)
        chosen.template_namespace = settings.get("template_namespace", chosen.template_namespace)
    return chosen


def _option_value(slug: str, name: str, option: dict, options: dict) -> tuple[str, dict]:
    choices, unlisted = option["choices"], option["unlisted_choice"]
    label = option.get("display_name", name)
    text = options.get(f"{name}--{UNLISTED}")
    picked = options.get(name)
    if text or picked == UNLISTED:
        if not unlisted["enabled"]:
            raise ProfileError(f"{label}: profile {slug!r} offers no other value than its choices")
        text = str(text or "")
        regex = unlisted.get("validation_regex")
        if not text or (regex and not re.fullmatch(regex, text)):
            hint = unlisted.get("validation_message") or (
                f"it must match {regex}" if regex else "enter a value"
            )
            raise ProfileError(f"{label}: {text!r} is not accepted: {hint}")
        return text, unlisted
    if picked is None or picked == "":
        if not choices:
            raise ProfileError(f"{label}: enter a value")
        picked = next(k for k, c in choices.items() if c.get("default"))
    if picked not in choices:
        offered = ", ".join(choices)
        raise ProfileError(f"{label}: {picked!r} is not offered; choose one of: {offered}")
    return str(picked), choices[picked]


def _strings(variables: dict | None, value: str = "") -> dict[str, str]:
    """Variables as strings; in an unlisted choice's variables `{value}` is the user's text."""
    return {str(k): str(v).replace("{value}", value) for k, v in (variables or {}).items()}


def options_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
    """kubespawner's form fields -> user_options: `profile`, and `profile-option-{slug}--{opt}`
    (also `...--unlisted-choice`) as `{opt}` and `{opt}--unlisted-choice`."""
    slug = (formdata.get("profile") or [""])[0]
    if not slug:
        return {}
    options = {"profile": slug}
    prefix = f"profile-option-{slug}--"
    for key, values in formdata.items():
        if key.startswith(prefix) and values:
            options[key[len(prefix) :]] = values[0]
    return options


def form_html(profiles: list[dict]) -> str:
    """The spawn form, with kubespawner's field names (so z2jh form customisations still fit)."""
    return "".join(_profile_html(p) for p in profiles)


def _profile_html(profile: dict) -> str:
    slug = html.escape(profile["slug"], quote=True)
    checked = " checked" if profile.get("default") else ""
    description = html.escape(str(profile.get("description", "")))
    options = "".join(
        _option_html(profile["slug"], name, option)
        for name, option in (profile.get("profile_options") or {}).items()
    )
    return (
        f'<div class="profile"><label><input type="radio" name="profile" value="{slug}"'
        f"{checked}> <strong>{html.escape(str(profile['display_name']))}</strong></label>"
        f"<p>{description}</p>{options}</div>"
    )


def _option_html(slug: str, name: str, option: dict) -> str:
    field_name = html.escape(f"profile-option-{slug}--{name}", quote=True)
    items = [
        f'<option value="{html.escape(key, quote=True)}"'
        f"{' selected' if choice.get('default') else ''}>"
        f"{html.escape(str(choice.get('display_name', key)))}</option>"
        for key, choice in option["choices"].items()
    ]
    unlisted = option["unlisted_choice"]
    text = ""
    if unlisted["enabled"]:
        selected = "" if option["choices"] else " selected"
        items.append(
            f'<option value="{UNLISTED}"{selected}>'
            f"{html.escape(str(unlisted['display_name_in_choices']))}</option>"
        )
        placeholder = html.escape(str(unlisted.get("display_name", "")), quote=True)
        pattern = html.escape(unlisted.get("validation_regex") or ".*", quote=True)
        text = (
            f'<input type="text" name="{field_name}--{UNLISTED}" '
            f'placeholder="{placeholder}" pattern="{pattern}">'
        )
    label = html.escape(str(option.get("display_name", name)))
    return f'<label>{label} <select name="{field_name}">{"".join(items)}</select></label>{text}'
