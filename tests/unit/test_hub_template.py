"""examples/hub-template.yaml renders valid objects for every shape of user name, with
kubespawner/z2jh's safe defaults. (tests/integration/test_jupyterhub.py runs it on a real hub.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from jupyternetes_ssa.names import is_label_value
from jupyternetes_ssa.render import render
from jupyternetes_ssa.spawner import instance_name
from jupyternetes_ssa.spawner_names import name_variables

TEMPLATE = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "examples" / "hub-template.yaml").read_text()
)
USERS = ["alice", "alice@example.com", "Ünïcødé ユーザー", "UPPER.Case", "a" * 200]


def instance(user: str, server: str = "", **extra: str) -> dict:
    """The variables the spawner sends, with stand-ins for the hub's URLs and env."""
    placeholders = set(re.findall(r"\{([^{}]+)\}", yaml.safe_dump(TEMPLATE)))
    variables = {
        n: f"value-of-{n}"
        for n in placeholders
        if not n.startswith("jupyternetes.") and n != "jupyterhub.api_token_secret"  # a built-in
    }
    variables.update(name_variables(user, server))
    variables.update({"jupyterhub.user.name": user, "jupyterhub.server.name": server, **extra})
    name = instance_name(user, server)
    variables["jupyternetes.instance.name"] = name
    return {
        "apiVersion": "kadense.io/v1",
        "kind": "JupyterNotebookInstance",
        "metadata": {"name": name, "namespace": "jhub"},
        "spec": {
            "template": {"name": "hub-template"},
            "variables": variables,
            "sealedApiToken": {"keyId": "k", "ciphertext": "c"},  # what the spawner sends
        },
    }


def by_kind(user: str, server: str = "", **extra: str) -> dict[str, dict]:
    return {
        i.manifest["kind"]: i.manifest
        for i in render(TEMPLATE, instance(user, server, **extra)).items
    }


@pytest.mark.parametrize("user", USERS)
def test_every_user_name_gives_valid_labels(user):
    for manifest in by_kind(user, "My Server").values():
        for value in manifest["metadata"]["labels"].values():
            assert is_label_value(value), (manifest["kind"], value)
    pod = by_kind(user)["Pod"]
    assert pod["metadata"]["annotations"]["hub.jupyter.org/username"] == user


def test_the_pod_has_z2jhs_safe_defaults():
    spec = by_kind("alice")["Pod"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["fsGroup"] == 100
    container = spec["containers"][0]["securityContext"]
    assert container == {"runAsUser": 1000, "allowPrivilegeEscalation": False}


def test_a_network_policy_blocks_the_cloud_metadata_address_unless_turned_off():
    policy = by_kind("alice")["NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector == {"jupyternetes.kadense.io/instance": instance_name("alice")}
    blocks = [r for r in policy["spec"]["egress"] for t in r.get("to", []) if "ipBlock" in t]
    assert "169.254.169.254/32" in blocks[0]["to"][0]["ipBlock"]["except"]
    assert "NetworkPolicy" not in by_kind("alice", **{"network-policy": "off"})
