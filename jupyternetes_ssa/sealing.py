"""Seal the hub's API token for one instance, and unseal it: pure functions, no I/O.

HPKE (RFC 9180, `cryptography`'s implementation) with X25519, HKDF-SHA256 and ChaCha20-Poly1305:
the spawner encrypts to the reconciler's public key; only the reconciler's private key opens it.
The plaintext names the instance (namespace and name) it was sealed for, and the key id is bound
through HPKE's `info`, so a ciphertext copied into another instance, or relabelled with another
key id, is refused rather than written into the wrong server's Secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from jupyternetes_ssa.errors import JupyternetesError
from jupyternetes_ssa.names import token_secret_name  # noqa: F401 (re-exported)

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
SUITE_NAME = "HPKE-X25519-HKDF_SHA256-CHACHA20_POLY1305"
INFO = b"jupyternetes-ssa sealed API token v1\x00"
FIELD = "spec.sealedApiToken"


class SealError(JupyternetesError):
    """A sealed token the reconciler cannot (or must not) open."""

    reason = "SealedTokenInvalid"


class NoSealingKey(SealError):
    reason = "SealingKeyMissing"


class UnknownSealingKey(SealError):
    reason = "SealingKeyUnknown"


class SealedForAnotherInstance(SealError):
    reason = "SealedForAnotherInstance"


class TamperedToken(SealError):
    reason = "SealedTokenTampered"


@dataclass(frozen=True)
class PublicKey:
    """What the hub needs to seal: the key's id and its raw X25519 public key."""

    key_id: str
    key: X25519PublicKey


@dataclass(frozen=True)
class Keyring:
    """The reconciler's private keys by id; `current` is the one published to the hub."""

    keys: Mapping[str, X25519PrivateKey] = field(default_factory=dict)
    current: str = ""

    def public(self) -> PublicKey:
        return PublicKey(self.current, self.keys[self.current].public_key())


def _raw(key: X25519PublicKey | X25519PrivateKey) -> bytes:
    if isinstance(key, X25519PrivateKey):
        return key.private_bytes_raw()
    return key.public_bytes_raw()


def key_id(public: X25519PublicKey) -> str:
    """A key's id: a fingerprint of its public half, so it can never name two keys."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def generate() -> tuple[str, X25519PrivateKey]:
    private = X25519PrivateKey.generate()
    return key_id(private.public_key()), private


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


# --- serialising keys -----------------------------------------------------------------------


def dump_keyring(ring: Keyring) -> str:
    """The keyring as the JSON stored in the reconciler's Secret."""
    keys = {kid: _b64(_raw(k)) for kid, k in ring.keys.items()}
    return json.dumps({"current": ring.current, "keys": keys}, indent=1, sort_keys=True)


def load_keyring(text: str, where: str) -> Keyring:
    """Parse dump_keyring's JSON; a damaged keyring is an error naming `where` and the fix."""
    try:
        doc = json.loads(text)
        keys = {
            kid: X25519PrivateKey.from_private_bytes(_unb64(b)) for kid, b in doc["keys"].items()
        }
        current = doc["current"]
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
        raise NoSealingKey(
            f"the keyring is not valid ({type(err).__name__}: {err})",
            subject=where,
            fix="restore it from a backup, or delete it so that the reconciler creates a new "
            "key at its next start (sealed tokens of running servers then cannot be opened)",
        ) from None
    if current not in keys:
        raise NoSealingKey(
            f"the current key {current!r} is not among its keys",
            subject=where,
            fix="set `current` to one of the key ids, or run `jupyternetes-ssa sealing-key rotate`",
        )
    return Keyring(keys, current)


def public_key_data(public: PublicKey) -> dict[str, str]:
    """The public ConfigMap's data."""
    return {"keyId": public.key_id, "publicKey": _b64(_raw(public.key)), "suite": SUITE_NAME}


def parse_public_key(data: Mapping[str, Any], where: str) -> PublicKey:
    """The inverse of public_key_data; checks that the id is the key's fingerprint."""
    try:
        key = X25519PublicKey.from_public_bytes(_unb64(str(data["publicKey"])))
    except (KeyError, ValueError, binascii.Error) as err:
        raise NoSealingKey(
            f"no valid publicKey ({type(err).__name__}: {err})",
            subject=where,
            fix="restart the reconciler, which publishes its key there",
        ) from None
    if data.get("keyId") != key_id(key) or data.get("suite", SUITE_NAME) != SUITE_NAME:
        raise NoSealingKey(
            "keyId or suite does not match the public key",
            subject=where,
            fix="restart the reconciler, which publishes its key there",
        )
    return PublicKey(data["keyId"], key)


# --- sealing and unsealing ------------------------------------------------------------------


def _info(kid: str) -> bytes:
    return INFO + kid.encode()


def seal(token: str, public: PublicKey, namespace: str, name: str) -> dict[str, str]:
    """`spec.sealedApiToken` for the instance namespace/name."""
    plaintext = json.dumps({"namespace": namespace, "name": name, "token": token}).encode()
    ciphertext = SUITE.encrypt(plaintext, public.key, info=_info(public.key_id))
    return {"keyId": public.key_id, "ciphertext": _b64(ciphertext)}


def unseal(sealed: Any, ring: Keyring, namespace: str, name: str) -> str:
    """The token sealed for namespace/name, or a SealError saying why not."""
    subject = f"JupyterNotebookInstance {namespace}/{name}"
    if not isinstance(sealed, Mapping) or not all(
        isinstance(sealed.get(f), str) for f in ("keyId", "ciphertext")
    ):
        raise TamperedToken(
            "must be a map with the strings keyId and ciphertext",
            subject=subject,
            path=FIELD,
            fix="let JupyterHub's spawner write it (restart the server)",
        )
    if not ring.keys:
        raise NoSealingKey(
            "the reconciler has no sealing key yet",
            subject=subject,
            path=FIELD,
            fix="check the reconciler's log: it creates its key Secret at start and needs the "
            "rights of examples/deploy/rbac/sealing-key",
        )
    kid = sealed["keyId"]
    private = ring.keys.get(kid)
    if private is None:
        raise UnknownSealingKey(
            f"sealed with key {kid!r}, which the reconciler does not hold "
            f"(it holds {', '.join(sorted(ring.keys))})",
            subject=subject,
            path=f"{FIELD}.keyId",
            fix="restart the server so the hub seals the token with the current key; if the key "
            "was retired too early, restore it from a backup of the keyring Secret",
        )
    try:
        plaintext = SUITE.decrypt(_unb64(sealed["ciphertext"]), private, info=_info(kid))
        doc = json.loads(plaintext)
        sealed_for, token = (doc["namespace"], doc["name"]), doc["token"]
    except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
        raise TamperedToken(
            "the ciphertext does not decrypt: it was changed, truncated or not sealed by "
            "JupyternetesSpawner",
            subject=subject,
            path=f"{FIELD}.ciphertext",
            fix="let JupyterHub's spawner write it (restart the server)",
        ) from None
    if sealed_for != (namespace, name) or not isinstance(token, str):
        raise SealedForAnotherInstance(
            f"the token was sealed for instance {sealed_for[0]}/{sealed_for[1]}, not this one",
            subject=subject,
            path=f"{FIELD}.ciphertext",
            fix="a sealed token only opens in the instance it was sealed for; let JupyterHub's "
            "spawner seal one for this instance (restart the server)",
        )
    return token
