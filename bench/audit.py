"""The subject's requests with their answers, read from the local cluster's audit log.

APF's counters (bench.attribution) count requests but not their outcome. To tell a useful delete
from a wasted one (404: already gone; 409: a precondition failed because someone else changed or
deleted the object first) we read the apiserver's own audit log, which the local cluster writes
with one JSON event per request (user, verb, resource, response code). A window is the bytes
appended between two offsets. A cluster given by ``--kubeconfig`` has no log we can read: the
figures are then missing, not guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from bench.cluster import SUBJECT, SYSTEM_NAMESPACE

SUBJECT_USER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{SUBJECT}"


class AuditLog:
    """``offset()`` before a window, ``answers(since)`` after it."""

    def __init__(self, path: Path | None):
        self.path = path

    @property
    def available(self) -> bool:
        return self.path is not None and self.path.exists()

    def offset(self) -> int:
        return self.path.stat().st_size if self.available else 0

    def answers(self, since: int, verb: str = "delete") -> dict[str, dict[str, int]] | None:
        """The subject's ``verb`` requests after ``since``: resource -> {HTTP code: count}."""
        if not self.available:
            return None
        counts: dict[str, Counter[str]] = {}
        with open(self.path, "rb") as log:
            log.seek(since)
            for line in log:
                event = _event(line)
                if (
                    event is None
                    or event.get("verb") != verb
                    or (event.get("user") or {}).get("username") != SUBJECT_USER
                ):
                    continue
                resource = (event.get("objectRef") or {}).get("resource", "?")
                code = str((event.get("responseStatus") or {}).get("code", "?"))
                counts.setdefault(resource, Counter())[code] += 1
        return {r: dict(sorted(c.items())) for r, c in sorted(counts.items())}


def _event(line: bytes) -> dict | None:
    """One complete audit event (the last line may still be half-written)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if event.get("stage") == "ResponseComplete" else None


def wasted(answers: dict[str, dict[str, int]] | None) -> int | None:
    """Deletes that removed nothing: the object was already gone (404) or had changed (409)."""
    if answers is None:
        return None
    return sum(
        n for codes in answers.values() for code, n in codes.items() if code in ("404", "409")
    )
