"""Count one client's requests on the apiserver's side, by verb and resource.

``apiserver_request_total`` counts every client at once: during a benchmark the scheduler, the
controller manager, the node agent and the volume provisioner are busy with the very pods we
create, so its deltas cannot tell our requests from theirs. The apiserver's API Priority and
Fairness (APF) does know who asked: every request is classified by the first matching FlowSchema
and ``apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}`` counts it. So the
contender under test runs as a dedicated ServiceAccount (the *subject*) and gets one FlowSchema per
(verb, resource) pair; the per-schema counter deltas are then exactly its requests, counted by the
apiserver itself (failed ones included), with no bookkeeping of ours in the path.

All these FlowSchemas point at the ``exempt`` priority level, so the classification never queues
or throttles the subject: the numbers measure the client, not APF.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench import promtext

PREFIX = "jupyternetes-bench-"
FLOW_LABEL_KEY = "jupyternetes-bench/flowschema"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})
# Resources worth their own counter; anything else of the subject lands in "other".
RESOURCES = (
    "pods",
    "persistentvolumeclaims",
    "jupyternotebookinstances",
    "jupyternotebookinstances/status",
    "jupyternotebooktemplates",
    "events",
    "namespaces",
)
OTHER = "other"  # a resource not in RESOURCES
NON_RESOURCE = "nonresource"  # /version, /api, /apis discovery and the like
SHORT = {
    "persistentvolumeclaims": "pvcs",
    "jupyternotebookinstances": "jni",
    "jupyternotebookinstances/status": "jni/status",
    "jupyternotebooktemplates": "jnt",
}
DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
REQUESTS = "apiserver_request_total"
CPU = "process_cpu_seconds_total"  # the apiserver's own CPU time
METRICS = (DISPATCHED, REQUESTS, CPU)


def schema_name(verb: str, resource: str) -> str:
    """The FlowSchema counting ``verb`` on ``resource`` (a DNS subdomain: ``/`` becomes ``.``)."""
    return f"{PREFIX}{verb}.{resource.replace('/', '.')}"


def parse_schema(name: str) -> tuple[str, str] | None:
    """(verb, resource) a FlowSchema of ours counts, or None for anybody else's schema."""
    if not name.startswith(PREFIX) or "." not in name:
        return None
    verb, _, resource = name[len(PREFIX) :].partition(".")
    return verb, resource.replace(".", "/", 1)


def _schema(name: str, precedence: int, subject: dict, rule: dict) -> dict[str, Any]:
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name, "labels": {FLOW_LABEL_KEY: "true"}},
        "spec": {
            "matchingPrecedence": precedence,
            "priorityLevelConfiguration": {"name": "exempt"},
            "rules": [{"subjects": [subject], **rule}],
        },
    }


def hub_flow_schema(namespace: str, service_account: str) -> dict[str, Any]:
    """The hub's requests, exempt from APF's queues as the admin's are; not counted."""
    subject = {
        "kind": "ServiceAccount",
        "serviceAccount": {"name": service_account, "namespace": namespace},
    }
    anything = {
        "resourceRules": [
            {
                "verbs": ["*"],
                "apiGroups": ["*"],
                "resources": ["*"],
                "namespaces": ["*"],
                "clusterScope": True,
            }
        ],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
    }
    return _schema(f"{PREFIX}hub", 50, subject, anything)


def flow_schemas(namespace: str, service_account: str) -> list[dict[str, Any]]:
    """Every FlowSchema needed to count the subject's requests; they never overlap.

    Precedences 10 (a named resource), 20 (any other resource), 30 (non-resource GETs) and 40
    (anything else) sit far below the built-in ``service-accounts`` schema (9000) that would
    otherwise take the subject, and above nothing that could match it first.
    """
    subject = {
        "kind": "ServiceAccount",
        "serviceAccount": {"name": service_account, "namespace": namespace},
    }

    def resource_rule(verb: str, resource: str) -> dict:
        return {
            "resourceRules": [
                {
                    "verbs": [verb],
                    "apiGroups": ["*"],
                    "resources": [resource],
                    "namespaces": ["*"],
                    "clusterScope": True,
                }
            ]
        }

    schemas = [
        _schema(schema_name(v, r), 10, subject, resource_rule(v, r))
        for v in VERBS
        for r in RESOURCES
    ]
    schemas += [_schema(schema_name(v, OTHER), 20, subject, resource_rule(v, "*")) for v in VERBS]
    discovery = {"nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["*"]}]}
    schemas.append(_schema(schema_name("get", NON_RESOURCE), 30, subject, discovery))
    anything = {
        **resource_rule("*", "*"),
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
    }
    schemas.append(_schema(schema_name(OTHER, OTHER), 40, subject, anything))
    return schemas


@dataclass
class Requests:
    """What one client asked of the apiserver in a window: counts by (verb, resource)."""

    by: dict[tuple[str, str], int] = field(default_factory=dict)
    dry_run: int = 0  # of the writes, how many were server-side dry-runs (they change nothing)

    @property
    def total(self) -> int:
        return sum(self.by.values())

    @property
    def writes(self) -> int:
        """Mutating requests, dry-runs excluded: what actually changed (or tried to) state."""
        return sum(n for (v, _), n in self.by.items() if v in WRITE_VERBS) - self.dry_run

    @property
    def reads(self) -> int:
        return sum(n for (v, _), n in self.by.items() if v in READ_VERBS)

    def of(self, verb: str, resource: str | None = None) -> int:
        return sum(n for (v, r), n in self.by.items() if v == verb and resource in (None, r))

    def by_verb(self) -> dict[str, dict[str, int]]:
        nested: dict[str, dict[str, int]] = defaultdict(dict)
        for (verb, resource), n in sorted(self.by.items()):
            nested[verb][resource] = n
        return dict(nested)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "writes": self.writes,
            "reads": self.reads,
            "dry_run": self.dry_run,
            "by_verb": self.by_verb(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Requests:
        by = {
            (verb, resource): n
            for verb, resources in data.get("by_verb", {}).items()
            for resource, n in resources.items()
        }
        return cls(by, data.get("dry_run", 0))


@dataclass(frozen=True)
class Snapshot:
    """The counters we need from one scrape of the apiserver's /metrics."""

    dispatched: promtext.Samples
    requests: promtext.Samples
    cpu_s: float | None = None  # the apiserver process's CPU seconds, when it reports them

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        found = promtext.samples(text, METRICS)
        return cls(found[DISPATCHED], found[REQUESTS], next(iter(found[CPU].values()), None))


def apiserver_cpu(before: Snapshot, after: Snapshot) -> float | None:
    """The apiserver's CPU seconds between two snapshots (all clients' work)."""
    if before.cpu_s is None or after.cpu_s is None:
        return None
    return round(after.cpu_s - before.cpu_s, 3)


def subject_requests(before: Snapshot, after: Snapshot) -> Requests:
    """The subject's requests between two snapshots.

    Dry-runs are not visible to APF; they come from ``apiserver_request_total``'s ``dry_run``
    label, which counts all clients, but only the subject issues dry-runs during a window.
    """
    counts: dict[tuple[str, str], int] = {}
    for labels, n in promtext.delta(before.dispatched, after.dispatched).items():
        parsed = parse_schema(promtext.label(labels, "flow_schema"))
        if parsed is not None:
            counts[parsed] = counts.get(parsed, 0) + int(n)
    dry = sum(
        int(n)
        for labels, n in promtext.delta(before.requests, after.requests).items()
        if promtext.label(labels, "dry_run")
    )
    return Requests(counts, dry)


def all_clients(before: Snapshot, after: Snapshot, resources: Iterable[str]) -> dict[str, int]:
    """Every client's requests on ``resources`` (``apiserver_request_total``), for context:
    ``"VERB resource[/sub]" -> n``."""
    wanted = set(resources)
    out: dict[str, int] = defaultdict(int)
    for labels, n in promtext.delta(before.requests, after.requests).items():
        found = dict(labels)
        if found.get("resource") not in wanted:
            continue
        sub = f"/{found['subresource']}" if found.get("subresource") else ""
        out[f"{found.get('verb', '?')} {found['resource']}{sub}"] += int(n)
    return dict(sorted(out.items()))
