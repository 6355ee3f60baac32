"""The sealed API token: seal for one instance, open only there, with a key the reconciler holds."""

from __future__ import annotations

import base64

import pytest

from jupyternetes_ssa import sealing
from jupyternetes_ssa.sealing import (
    Keyring,
    NoSealingKey,
    SealedForAnotherInstance,
    TamperedToken,
    UnknownSealingKey,
)

TOKEN = "4f1c0a9e8d7b6a5f4e3d2c1b0a998877"


def ring(*names: str) -> Keyring:
    keys = dict(sealing.generate() for _ in names or ("one",))
    return Keyring(keys, next(iter(keys)))


def test_a_sealed_token_opens_in_its_instance_and_hides_the_token():
    keys = ring()
    sealed = sealing.seal(TOKEN, keys.public(), "jhub", "abc")

    assert sealed["keyId"] == keys.current
    assert TOKEN not in sealed["ciphertext"]
    assert TOKEN.encode() not in base64.b64decode(sealed["ciphertext"])
    assert sealing.unseal(sealed, keys, "jhub", "abc") == TOKEN


def test_sealing_twice_gives_different_ciphertexts():
    keys = ring()
    first, second = (sealing.seal(TOKEN, keys.public(), "jhub", "abc") for _ in range(2))
    assert first["ciphertext"] != second["ciphertext"]


@pytest.mark.parametrize(
    ("namespace", "name"), [("jhub", "other"), ("other", "abc"), ("jhubabc", ""), ("jhu", "babc")]
)
def test_a_ciphertext_copied_into_another_instance_is_refused(namespace, name):
    keys = ring()
    sealed = sealing.seal(TOKEN, keys.public(), "jhub", "abc")

    with pytest.raises(SealedForAnotherInstance) as err:
        sealing.unseal(sealed, keys, namespace, name)

    assert "sealed for instance jhub/abc" in str(err.value)
    assert err.value.path == "spec.sealedApiToken.ciphertext"
    assert TOKEN not in str(err.value)


def test_every_flipped_bit_is_detected():
    keys = ring()
    sealed = sealing.seal(TOKEN, keys.public(), "jhub", "abc")
    raw = base64.b64decode(sealed["ciphertext"])
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            bad = bytearray(raw)
            bad[i] ^= bit
            tampered = {**sealed, "ciphertext": base64.b64encode(bytes(bad)).decode()}
            with pytest.raises(TamperedToken):
                sealing.unseal(tampered, keys, "jhub", "abc")


@pytest.mark.parametrize(
    "ciphertext", ["", "not base64!", base64.b64encode(b"short").decode(), "QUJD" * 40]
)
def test_garbage_ciphertexts_are_tampered_not_crashes(ciphertext):
    keys = ring()
    with pytest.raises(TamperedToken):
        sealing.unseal({"keyId": keys.current, "ciphertext": ciphertext}, keys, "jhub", "abc")


@pytest.mark.parametrize("sealed", [None, "text", {"keyId": 1, "ciphertext": "x"}, {"keyId": "k"}])
def test_a_malformed_field_is_refused(sealed):
    with pytest.raises(TamperedToken) as err:
        sealing.unseal(sealed, ring(), "jhub", "abc")
    assert err.value.path == "spec.sealedApiToken"


def test_an_unknown_key_is_named():
    sealed = sealing.seal(TOKEN, ring().public(), "jhub", "abc")
    keys = ring()

    with pytest.raises(UnknownSealingKey) as err:
        sealing.unseal(sealed, keys, "jhub", "abc")

    assert sealed["keyId"] in str(err.value)
    assert err.value.reason == "SealingKeyUnknown"


def test_relabelling_a_ciphertext_with_another_held_key_id_is_tampering():
    keys = ring("a", "b")
    first, second = list(keys.keys)
    sealed = sealing.seal(TOKEN, Keyring(keys.keys, first).public(), "jhub", "abc")
    with pytest.raises(TamperedToken):
        sealing.unseal({**sealed, "keyId": second}, keys, "jhub", "abc")


def test_no_key_at_all():
    sealed = sealing.seal(TOKEN, ring().public(), "jhub", "abc")
    with pytest.raises(NoSealingKey) as err:
        sealing.unseal(sealed, Keyring(), "jhub", "abc")
    assert err.value.reason == "SealingKeyMissing"


def test_old_keys_still_open_what_they_sealed_after_a_rotation():
    old = ring()
    sealed = sealing.seal(TOKEN, old.public(), "jhub", "abc")
    kid, new = sealing.generate()
    rotated = Keyring({**old.keys, kid: new}, kid)

    assert sealing.unseal(sealed, rotated, "jhub", "abc") == TOKEN
    assert sealing.seal(TOKEN, rotated.public(), "jhub", "abc")["keyId"] == kid


def test_the_keyring_round_trips_through_its_json():
    keys = ring("a", "b")
    loaded = sealing.load_keyring(sealing.dump_keyring(keys), "Secret x/y")
    assert loaded.current == keys.current
    assert set(loaded.keys) == set(keys.keys)
    sealed = sealing.seal(TOKEN, keys.public(), "n", "i")
    assert sealing.unseal(sealed, loaded, "n", "i") == TOKEN


@pytest.mark.parametrize(
    "text", ["", "{}", '{"current": "x", "keys": {}}', '{"current": "x", "keys": {"x": "!!"}}']
)
def test_a_damaged_keyring_is_an_error_naming_its_secret(text):
    with pytest.raises(NoSealingKey) as err:
        sealing.load_keyring(text, "Secret ns/keys")
    assert "Secret ns/keys" in str(err.value)


def test_the_published_public_key_round_trips_and_its_id_is_checked():
    keys = ring()
    data = sealing.public_key_data(keys.public())
    assert sealing.parse_public_key(data, "ConfigMap a/b").key_id == keys.current

    other = sealing.public_key_data(ring().public())
    with pytest.raises(NoSealingKey):
        sealing.parse_public_key({**data, "keyId": other["keyId"]}, "ConfigMap a/b")
    with pytest.raises(NoSealingKey):
        sealing.parse_public_key({"keyId": "x"}, "ConfigMap a/b")


def test_the_token_secret_name_is_a_dns_label():
    assert sealing.token_secret_name("8dc366d8a0f05869bfdb6e7eb3d83f65") == (
        "8dc366d8a0f05869bfdb6e7eb3d83f65-hub-token"
    )
    assert len(sealing.token_secret_name("x" * 63)) <= 63


def _instance(sealed: bool, **variables: str) -> dict:
    spec: dict = {"template": {"name": "t"}, "variables": variables}
    if sealed:
        spec["sealedApiToken"] = {"keyId": "k", "ciphertext": "c"}
    return {"metadata": {"name": "abc", "namespace": "jhub", "uid": "u"}, "spec": spec}


TEMPLATE = {
    "metadata": {"name": "t", "namespace": "jhub"},
    "spec": {
        "pods": [
            {
                "name": "notebook",
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "env": [
                                {
                                    "name": "JUPYTERHUB_API_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "{jupyterhub.api_token_secret}",
                                            "key": "token",
                                        }
                                    },
                                }
                            ],
                        }
                    ]
                },
            }
        ]
    },
}


def test_the_token_secret_variable_is_a_built_in_of_instances_with_a_sealed_token():
    from jupyternetes_ssa.errors import RenderError
    from jupyternetes_ssa.render import render

    (pod,) = render(TEMPLATE, _instance(True)).items
    env = pod.manifest["spec"]["containers"][0]["env"][0]
    assert env["valueFrom"]["secretKeyRef"]["name"] == "abc-hub-token"

    with pytest.raises(RenderError, match=r"jupyterhub\.api_token_secret"):
        render(TEMPLATE, _instance(False))  # no sealed token: no Secret to point at
    with pytest.raises(RenderError, match="built-in"):
        render(TEMPLATE, _instance(True, **{"jupyterhub.api_token_secret": "someone-elses"}))


def test_an_instance_without_a_sealed_token_may_not_name_the_token_secret():
    """Else a breached hub points a pod's secretKeyRef at any Secret with a `token` key."""
    from jupyternetes_ssa.errors import RenderError
    from jupyternetes_ssa.render import render

    template = {
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"pods": [{"name": "nb", "spec": {"containers": [{"name": "c", "image": "i"}]}}]},
    }
    instance = {
        "metadata": {"name": "evil", "namespace": "ns", "uid": "u"},
        "spec": {
            "template": {"name": "t"},
            "variables": {"jupyterhub.api_token_secret": "db-creds"},
        },
    }
    with pytest.raises(RenderError, match="is reserved"):
        render(template, instance)
