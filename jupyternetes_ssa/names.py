"""Deterministic, collision-free object names and label values from arbitrary text.

The scheme is kubespawner's "safe slug" (jupyterhub/kubespawner, kubespawner/slugs.py:
`safe_slug`, `strip_and_hash`, `_extract_safe_name`), matched as follows:

- a string that is already valid, and contains no `--`, is returned unchanged;
- otherwise: lower-case it, replace every run of characters outside [a-z0-9] with one `-`,
  strip leading `-`, truncate to `max_length - 11`, strip trailing `-` (`x` if nothing is left),
  and append `---` plus the first 8 hex digits of sha256 of the ORIGINAL string (UTF-8).

Why the `--` rule: every hashed result contains `---`, so a name kept unchanged must not contain
`--`, or a user could pick a raw name equal to someone else's hashed name (and mount their PVC).

Differences from kubespawner: validity is a DNS-1123 label (may start with a digit, as
the original Jupyternetes' `<uuid hex>-<item>` names do), not kubespawner's stricter RFC 1035
object name, so no `x-` prefix is added before a leading digit; and the default length is 63
(a full DNS label) rather than kubespawner's 32 for hashed names.
"""

from __future__ import annotations

import hashlib
import re

MAX_LABEL_LENGTH = 63
HASH_LENGTH = 8
_SEPARATOR = "---"
_MIN_LENGTH = HASH_LENGTH + len(_SEPARATOR) + 1

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def is_dns_label(s: object) -> bool:
    """True if `s` is a DNS-1123 label: what Kubernetes accepts as a Pod/PVC/namespace name."""
    return isinstance(s, str) and len(s) <= MAX_LABEL_LENGTH and bool(_DNS_LABEL.fullmatch(s))


def is_label_value(s: object) -> bool:
    """True if `s` is a valid label value (may be empty; alphanumeric at both ends)."""
    return isinstance(s, str) and len(s) <= MAX_LABEL_LENGTH and bool(_LABEL_VALUE.fullmatch(s))


def safe_name(raw: str, max_length: int = MAX_LABEL_LENGTH) -> str:
    """Return `raw` if it is a DNS label without `--`, else a hashed slug of it (see module doc)."""
    if not _MIN_LENGTH <= max_length <= MAX_LABEL_LENGTH:
        raise ValueError(f"max_length must be {_MIN_LENGTH}..{MAX_LABEL_LENGTH}, not {max_length}")
    if "--" not in raw and len(raw) <= max_length and is_dns_label(raw):
        return raw
    return _strip_and_hash(raw, max_length)


def safe_label_value(raw: str) -> str:
    """Return `raw` if it is a valid label value without `--`, else a hashed slug of it."""
    if "--" not in raw and is_label_value(raw):
        return raw
    return _strip_and_hash(raw, MAX_LABEL_LENGTH)


def _strip_and_hash(raw: str, max_length: int) -> str:
    """Readable prefix plus a hash of the whole raw string, so distinct inputs stay distinct."""
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]
    keep = max_length - HASH_LENGTH - len(_SEPARATOR)
    prefix = _NON_ALNUM.sub("-", raw.lower()).lstrip("-")[:keep].rstrip("-") or "x"
    return f"{prefix}{_SEPARATOR}{digest}"


def token_secret_name(instance: str) -> str:
    """The Secret (key `token`) the reconciler writes for an instance with a sealed token."""
    return safe_name(f"{instance}-hub-token")
