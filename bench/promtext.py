"""Just enough of the Prometheus text format to read the apiserver's counters.

The apiserver's /metrics is a few MB; only the lines of the samples we ask for are parsed, so a
snapshot costs milliseconds. Counters are compared between two snapshots with :func:`delta`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: hashable and order-free
Samples = dict[Labels, float]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group(0)], value)


def parse_labels(text: str) -> Labels:
    """``a="1",b="x\\"y"`` -> (("a", "1"), ("b", 'x"y')); raises ValueError on garbage."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None:
            if text[pos:].strip():
                raise ValueError(f"cannot parse labels at {text[pos:]!r}")
            break
        pairs.append((match.group(1), _unescape(match.group(2))))
        pos = match.end()
    return tuple(sorted(pairs))


def parse_value(text: str) -> float:
    """A sample value: a float, or +Inf / -Inf / NaN as Prometheus spells them."""
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    return special[text] if text in special else float(text)


def samples(text: str, names: Iterable[str]) -> dict[str, Samples]:
    """The samples of each metric in ``names`` (exact sample names, e.g. ``x_total``)."""
    wanted = {name: {} for name in names}
    prefixes = tuple(wanted)
    for line in text.splitlines():
        if not line.startswith(prefixes):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in wanted:
            continue  # another metric sharing the prefix (x_bucket, x_total_seconds, ...)
        wanted[match.group(1)][parse_labels(match.group(2) or "")] = parse_value(match.group(3))
    return wanted


def delta(before: Mapping[Labels, float], after: Mapping[Labels, float]) -> Samples:
    """Counter increase per label set (zero increases dropped).

    A decrease means the process restarted between the snapshots, which makes every figure of
    the window meaningless, so it is an error rather than something to paper over.
    """
    out: Samples = {}
    for labels, value in after.items():
        grown = value - before.get(labels, 0.0)
        if grown < 0:
            raise ValueError(f"counter {dict(labels)} went down ({before[labels]} -> {value})")
        if grown:
            out[labels] = grown
    return out


def label(labels: Labels, name: str, default: str = "") -> str:
    return dict(labels).get(name, default)
