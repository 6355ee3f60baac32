"""Plain-text Markdown tables and the number formats used in them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.attribution import SHORT

MISSING = "\u2013"  # en dash
TIMES = "\u00d7"  # multiplication sign


def dig(data: Any, *path: str) -> Any:
    """``data[p0][p1]...`` or None when any step is missing."""
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table, columns padded so that it also reads well as plain text."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [headers, *rows]]
    if any(len(row) != len(headers) for row in cells):
        raise ValueError("every row needs one cell per header")
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def fmt_seconds(seconds: float | None) -> str:
    """3 significant figures, in s or ms."""
    if seconds is None:
        return MISSING
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f}{TIMES}" if value < 10 else f"{value:.1f}{TIMES}"


def fmt_mib(kib: int | float | None) -> str:
    return MISSING if kib is None else f"{kib / 1024:.0f} MiB"


def fmt_count(n: int | float | None) -> str:
    return MISSING if n is None else f"{int(n):,}"


def fmt_requests(req: Mapping | None) -> str:
    """``total (w writes)`` from a Requests.to_json() dict; dry-runs are shown when present."""
    if not req:
        return MISSING
    text = f"{req['total']:,} ({req['writes']:,} writes"
    if req.get("dry_run"):
        text += f" + {req['dry_run']:,} dry-run"
    return text + ")"


def fmt_breakdown(by_verb: Mapping[str, Mapping[str, int]]) -> str:
    """``list 5 (jni 1, pods 1, …); patch 300 (pods 100, pvcs 100, …)``: verbs by volume."""
    parts = []
    ranked = sorted(by_verb.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    for verb, resources in ranked:
        total = sum(resources.values())
        inner = ", ".join(
            f"{SHORT.get(r, r)} {n:,}"
            for r, n in sorted(resources.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        parts.append(f"{verb} {total:,} ({inner})")
    return "; ".join(parts) or "none"
