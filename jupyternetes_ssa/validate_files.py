"""`jupyternetes-ssa validate`: check files of templates and instances, for CI pipelines.

Reads the files (bounded, see load.py), sorts their documents by kind, and runs validate.py on
each template and on each instance with its template when that is among the files. Problems are
collected, never raised, so one run lists every mistake of every file.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from jupyternetes_ssa.errors import JupyternetesError
from jupyternetes_ssa.load import LoadError, load_documents
from jupyternetes_ssa.render import TEMPLATE_KIND, select_template
from jupyternetes_ssa.types import Manifest
from jupyternetes_ssa.validate import (
    INSTANCE_KIND,
    check_instance,
    check_pair,
    instance_subject,
    template_problems,
    template_subject,
)


@dataclass
class ValidationReport:
    """What one `validate` run found."""

    files: int = 0
    templates: int = 0
    instances: int = 0
    problems: list[tuple[str, JupyternetesError]] = field(default_factory=list)  # (file, problem)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def expand_dirs(paths: list[Path]) -> list[Path]:
    """Files as given; a directory stands for its *.yaml, *.yml and *.json files, recursively."""
    out = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        else:
            out.append(path)
    return out


def validate_files(paths: list[Path]) -> ValidationReport:
    paths = expand_dirs(paths)
    report = ValidationReport(files=len(paths))
    templates: list[tuple[str, Manifest]] = []
    instances: list[tuple[str, Manifest]] = []
    for path in paths:
        try:
            docs = load_documents(path)
        except LoadError as err:
            report.problems.append((str(path), err))
            continue
        for number, doc in enumerate(docs, 1):
            kind = doc.get("kind")
            if kind == TEMPLATE_KIND:
                templates.append((str(path), doc))
            elif kind == INSTANCE_KIND:
                instances.append((str(path), doc))
            else:
                _other_kind(report, str(path), number, kind)
    report.templates, report.instances = len(templates), len(instances)
    if not templates and not instances and not report.problems:
        names = ", ".join(map(str, paths))
        found = JupyternetesError(f"no {TEMPLATE_KIND} or {INSTANCE_KIND} found", subject=names)
        report.problems.append((names, found))
    valid_templates = []
    for origin, template in templates:
        problems, notes = template_problems(template, template_subject(template, origin))
        report.problems += [(origin, p) for p in problems]
        report.notes += notes
        if not problems:
            valid_templates.append((origin, template))
    for origin, instance in instances:
        _check_instance(report, origin, instance, templates, valid_templates)
    return report


def _other_kind(report: ValidationReport, path: str, number: int, kind: object) -> None:
    """A near miss of our kinds is a typo; any other kind is simply not ours to check."""
    close = difflib.get_close_matches(str(kind), [TEMPLATE_KIND, INSTANCE_KIND], n=1)
    if close:
        report.problems.append(
            (path, JupyternetesError(
                f"document {number} has kind {json.dumps(kind)}",
                subject=path, path="kind", fix=f'did you mean "{close[0]}"?',
            ))
        )  # fmt: skip
    else:
        report.notes.append(f"{path}: document {number} ({kind}) is not a template or instance")


def _check_instance(
    report: ValidationReport,
    origin: str,
    instance: Manifest,
    templates: list[tuple[str, Manifest]],
    valid: list[tuple[str, Manifest]],
) -> None:
    subject = instance_subject(instance, origin)
    problems = check_instance(instance, subject)
    report.problems += [(origin, p) for p in problems]
    if problems:
        return
    try:
        template = select_template([t for _, t in templates], instance)
    except JupyternetesError:
        report.notes.append(
            f"{subject}: its template is not among the files, so it was not rendered"
        )
        return
    template_origin = next((o for o, t in valid if t is template), None)
    if template_origin is None:
        report.notes.append(f"{subject}: not rendered, its template has problems")
        return
    _, problems, _ = check_pair(
        template, instance, template_origin=template_origin, instance_origin=origin
    )
    report.problems += [(origin, p) for p in problems]


def report_json(report: ValidationReport) -> str:
    """Always valid JSON (ASCII, no NaN): tools read it."""
    problems = [
        {
            "file": file,
            "subject": p.subject,
            "path": p.path,
            "message": p.message,
            "fix": p.fix,
            "text": str(p),
        }
        for file, p in report.problems
    ]
    doc = {
        "valid": report.ok,
        "checked": {"files": report.files, "templates": report.templates,
                    "instances": report.instances},
        "problems": problems,
        "notes": report.notes,
    }  # fmt: skip
    return json.dumps(doc, indent=2, allow_nan=False)


def report_text(report: ValidationReport) -> str:
    lines = [f"error: {p}" for _, p in report.problems] + [f"note: {n}" for n in report.notes]
    what = (
        f"{report.templates} template(s), {report.instances} instance(s) in {report.files} file(s)"
    )
    count = len(report.problems)
    lines.append(f"{what}: {'valid' if report.ok else f'{count} problem(s)'}")
    return "\n".join(lines)
