"""Safe forms of JupyterHub user and server names, sent to templates next to the raw names.

A user name may be an e-mail address, upper case, unicode, or 200 characters long: none of those
fits a label value or an object name. The spawner sends, for the user and the server:

- `*.slug`: a DNS label (our `names.safe_name`: kept when already valid, else hashed);
- `*.label`: a label value (`names.safe_label_value`);
- the names kubespawner would have produced for the same user, with its `safe` scheme (7.x
  default) and its legacy `escape` scheme (< 7), so a template can name (or adopt) the
  `claim-...` PVCs a kubespawner site already has.

The kubespawner functions follow jupyterhub/kubespawner `kubespawner/slugs.py` (`safe_slug`,
`strip_and_hash`, `_extract_safe_name`, `multi_slug`, `escape_slug`) and `_expand_user_properties`
in `kubespawner/spawner.py` (7.x), and escapism 1.0 (`escape`: every UTF-8 byte of an unsafe
character becomes `-` plus its upper-case hex, without zero padding), re-implemented here.
"""

from __future__ import annotations

import hashlib
import re
import string

from jupyternetes_ssa.names import safe_label_value, safe_name

KUBESPAWNER_MAX = 48  # kubespawner's _slug_max_length for user/server slugs
_HASH = 8
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_OBJECT = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_ESCAPE_SAFE = frozenset(string.ascii_lowercase + string.digits)


def escape_slug(name: str) -> str:
    """kubespawner's legacy `escape` scheme: `user@email.com` -> `user-40email-2ecom`."""
    out = []
    for char in name:
        if char in _ESCAPE_SAFE:
            out.append(char)
        else:
            out.extend(f"-{byte:X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out).lower()


def _extract(name: str, max_length: int) -> str:
    safe = _NON_ALNUM.sub("-", name.lower()).lstrip("-")[:max_length].rstrip("-")
    if safe and not safe[0].isalpha():
        safe = "x-" + safe[: max_length - 2]
    return safe or "x"


def _sha(*parts: str) -> str:
    digest = hashlib.sha256(parts[0].encode("utf-8", "surrogatepass"))
    for part in parts[1:]:
        digest.update(b"\xff")  # cannot occur in UTF-8: no two part lists hash alike
        digest.update(part.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:_HASH]


def kubespawner_safe_slug(name: str, max_length: int = KUBESPAWNER_MAX) -> str:
    """kubespawner's `safe_slug(name, max_length=48)`: kept if a valid RFC 1035 label of at most
    `max_length` without `--`, else `{extract}---{sha256[:8]}`."""
    if "--" not in name and len(name) <= max_length and _OBJECT.fullmatch(name):
        return name
    return f"{_extract(name, max_length - _HASH - 3)}---{_sha(name)}"


def kubespawner_multi_slug(names: list[str], max_length: int = KUBESPAWNER_MAX) -> str:
    """kubespawner's `multi_slug`: each name cut to an equal share, joined by `--`, one hash."""
    per_name = (max_length - _HASH - 1) // len(names) - 2
    return "--".join(_extract(n, per_name) for n in names) + f"---{_sha(*names)}"


def kubespawner_names(user: str, server: str = "") -> dict[str, str]:
    """`{username}`, `{servername}` and `{user_server}` of kubespawner's two slug schemes."""
    safe_user = kubespawner_safe_slug(user)
    safe_server = kubespawner_safe_slug(server) if server else ""
    if len(safe_user) + len(safe_server) + 2 > KUBESPAWNER_MAX:
        safe_user_server = kubespawner_multi_slug([user, server])
    else:
        safe_user_server = f"{safe_user}--{safe_server}" if server else safe_user
    escaped_user, escaped_server = escape_slug(user), escape_slug(server)
    escaped_user_server = f"{escaped_user}--{escaped_server}" if server else escaped_user
    return {
        "kubespawner.safe.username": safe_user,
        "kubespawner.safe.servername": safe_server,
        "kubespawner.safe.user_server": safe_user_server,
        "kubespawner.escape.username": escaped_user,
        "kubespawner.escape.servername": escaped_server,
        "kubespawner.escape.user_server": escaped_user_server,
        # the PVC names of kubespawner 7 (`claim-{user_server}`, either scheme)
        "kubespawner.safe.pvc_name": f"claim-{safe_user_server}",
        "kubespawner.escape.pvc_name": f"claim-{escaped_user_server}",
    }


def name_variables(user: str, server: str = "") -> dict[str, str]:
    """Every safe form of the user and server names, as template variables."""
    return {
        "jupyterhub.user.slug": safe_name(user),
        "jupyterhub.user.label": safe_label_value(user),
        "jupyterhub.server.slug": safe_name(server) if server else "",
        "jupyterhub.server.label": safe_label_value(server),
        **kubespawner_names(user, server),
    }
