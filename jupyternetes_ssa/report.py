"""Summaries of a pass, for people (text) and machines (json)."""

from __future__ import annotations

import json
from collections import Counter

from jupyternetes_ssa.types import InstanceResult, Summary


def _counts(result: InstanceResult) -> dict[str, int]:
    return dict(Counter(o.action for o in result.outcomes))


def summary_dict(summary: Summary) -> dict:
    return {
        "ok": summary.ok,
        "instances": [
            {
                "instance": f"{r.instance.namespace}/{r.instance.name}",
                "converged": r.converged,
                "actions": _counts(r),
                "error": r.error,
                "reason": r.reason,
                "statusWritten": r.status_written,
                "items": [
                    {
                        "item": f"{o.item.section}[{o.item.item}]",
                        "object": o.item.name,
                        "action": o.action,
                        "message": o.message,
                        "fields": list(o.fields),
                    }
                    for o in r.outcomes
                ],
            }
            for r in summary.instances
        ],
        "pruned": [{"object": str(c.ref), "reason": c.reason} for c in summary.pruned],
        "kept": [
            {"object": str(c.ref), "reason": c.reason + " (kept: deletionPolicy Retain)"}
            for c in summary.kept
        ],
        "pruneError": summary.prune_error,
    }


def summary_json(summary: Summary) -> str:
    return json.dumps(summary_dict(summary), indent=2)


def summary_text(summary: Summary, dry_run: bool = False) -> str:
    would = "would be " if dry_run else ""
    lines = []
    for r in summary.instances:
        counts = ", ".join(f"{n} {a}" for a, n in sorted(_counts(r).items())) or "nothing"
        lines.append(
            f"{r.instance.namespace}/{r.instance.name}: {would}{counts}"
            + (f" -- ERROR {r.reason}: {r.error}" if r.error else "")
        )
        for o in r.outcomes:
            if o.fields or o.action in ("failed", "pending"):
                lines.append(
                    f"  {o.item.section}[{o.item.item}] {o.item.name}: {o.action}"
                    + (f" {', '.join(o.fields)}" if o.fields else "")
                    + (f" ({o.message})" if o.message and o.message != r.error else "")
                )
    lines += [f"{would}pruned {c.ref}: {c.reason}" for c in summary.pruned]
    lines += [f"kept {c.ref}: {c.reason} (deletionPolicy Retain)" for c in summary.kept]
    if summary.prune_error:
        lines.append(f"garbage collection stopped: {summary.prune_error}")
    bad = sum(not r.converged for r in summary.instances)
    lines.append(
        f"{len(summary.instances)} instances, {bad} not converged, "
        f"{len(summary.pruned)} {would}pruned, {len(summary.kept)} kept"
    )
    return "\n".join(lines)
