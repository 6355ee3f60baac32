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
from dataclasses import dataclass
from pathlib import Path

from bench.cluster import SUBJECT, SYSTEM_NAMESPACE

SUBJECT_USER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{SUBJECT}"


@dataclass(frozen=True)
class Mark:
    """Where a window starts: the log file (by inode, as it may be renamed) and its size."""

    inode: int
    size: int


class AuditLog:
    """``mark()`` before a window, ``answers(since)`` after it.

    The apiserver rotates its audit log (at 100 MB unless told otherwise: a run at N = 5,000
    writes more): the file is renamed to ``audit-<time>.log`` and a new one begun. A window is
    therefore read from its mark in whichever file now has that inode, then every newer file.
    """

    def __init__(self, path: Path | None):
        self.path = path

    @property
    def available(self) -> bool:
        return self.path is not None and self.path.exists()

    def mark(self) -> Mark | None:
        if not self.available:
            return None
        found = self.path.stat()
        return Mark(found.st_ino, found.st_size)

    def _files_since(self, since: Mark) -> list[tuple[Path, int]] | None:
        """(file, offset to read from) in order of writing; None if the marked file is gone."""
        files = sorted(
            self.path.parent.glob(f"{self.path.stem}*{self.path.suffix}"),
            key=lambda f: (f.stat().st_mtime_ns, f.name == self.path.name),  # current last
        )
        inodes = [f.stat().st_ino for f in files]
        if since.inode not in inodes:
            return None
        first = inodes.index(since.inode)
        return [(f, since.size if i == first else 0) for i, f in enumerate(files) if i >= first]

    def answers(self, since: Mark | None, verb: str = "delete") -> dict[str, dict[str, int]] | None:
        """The subject's ``verb`` requests after ``since``: resource -> {HTTP code: count};
        None when the log cannot tell (no log, or the marked file is gone)."""
        files = self._files_since(since) if since is not None and self.available else None
        if files is None:
            return None
        counts: dict[str, Counter[str]] = {}
        for path, offset in files:
            with open(path, "rb") as log:
                log.seek(offset)
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
