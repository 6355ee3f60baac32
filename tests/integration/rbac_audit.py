"""RBAC proven by use: what one credential really asked the apiserver, from its audit log.

The local cluster's apiserver logs every request (Metadata level: who, verb, resource, answer;
see `LocalCluster.audit_log`). A ServiceAccount token carries its own id (the audit event's
`authentication.kubernetes.io/credential-id`), so the requests of one process are told apart
from a test's own probes made with another token of the same account.

`uses(...)` reads them as (group, resource[/subresource], verb, name); `not_granted` is what was
used that the shipped rules lack (a 403, or a change that would fail on a real cluster), and
`never_used` what the rules grant that nothing used.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CREDENTIAL = "authentication.kubernetes.io/credential-id"


@dataclass(frozen=True)
class Use:
    group: str
    resource: str  # `pods`, or `jupyternotebookinstances/status` for a subresource
    verb: str
    name: str = ""

    def __str__(self) -> str:
        group = f".{self.group}" if self.group else ""
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.resource}{group}{named}"


@dataclass(frozen=True)
class Rule:
    group: str
    resource: str
    verb: str
    names: tuple[str, ...] = ()

    def allows(self, use: Use) -> bool:
        return (self.group, self.resource, self.verb) == (use.group, use.resource, use.verb) and (
            not self.names or use.name in self.names
        )

    def __str__(self) -> str:
        named = f" (resourceNames {', '.join(self.names)})" if self.names else ""
        return f"{self.verb} {self.resource}{'.' + self.group if self.group else ''}{named}"


def credential(kubeconfig: Path) -> str:
    """The audit log's credential id of the (only) token in ``kubeconfig``: `JTI=<its jti>`."""
    config = yaml.safe_load(kubeconfig.read_text())
    (user,) = config["users"]
    payload = user["user"]["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


def uses(audit_log: Path, credential_id: str) -> set[Use]:
    """Every resource request made with that credential so far (non-resource URLs left out).

    A server-side apply that creates its object is one PATCH answered 201, which the apiserver
    authorized as both patch and create: it counts as both.
    """
    found: set[Use] = set()
    with audit_log.open() as log:
        for line in log:
            if credential_id not in line:  # cheap filter before parsing
                continue
            event = json.loads(line)
            extra = event["user"].get("extra") or {}
            ref = event.get("objectRef")
            if credential_id not in extra.get(CREDENTIAL, []) or not ref:
                continue
            resource = ref["resource"] + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            group, name = ref.get("apiGroup", ""), ref.get("name", "")
            found.add(Use(group, resource, event["verb"], name))
            code = (event.get("responseStatus") or {}).get("code")
            if event["verb"] == "patch" and code == 201:
                found.add(Use(group, resource, "create", name))
    return found


def rules(docs: list[dict]) -> list[Rule]:
    """The rules of every Role and ClusterRole among ``docs``, one per (resource, verb)."""
    found = []
    for doc in docs:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            assert "nonResourceURLs" not in rule, rule
            found += [
                Rule(group, resource, verb, tuple(rule.get("resourceNames") or ()))
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
            ]
    return found


def not_granted(used: set[Use], granted: list[Rule]) -> list[str]:
    return sorted(str(u) for u in used if not any(r.allows(u) for r in granted))


def never_used(granted: list[Rule], used: set[Use], unexercised: dict[Any, str]) -> list[str]:
    """Granted rules no request used, less the ``unexercised`` ones (each with its reason)."""
    return sorted(
        str(r)
        for r in granted
        if (r.group, r.resource, r.verb) not in unexercised and not any(r.allows(u) for u in used)
    )
