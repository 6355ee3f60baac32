"""The corpus (tests/validation_cases.py), offline: each broken file gives its own message.

Every case goes through the files layer that `jupyternetes-ssa validate` uses (bounded loading,
shape, schemas, rendering), and the problem it must produce names the file, the field path, and
says what is wrong or what would be valid.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from validation_cases import CASES, SCHEMA, SHAPE, Case

from jupyternetes_ssa.validate_files import validate_files


def write(tmp_path: Path, case: Case) -> tuple[Path, Path]:
    template, instance = case.documents()
    t_path, i_path = tmp_path / "template.yaml", tmp_path / "instance.yaml"
    if case.raw:
        t_path.write_bytes(case.raw.encode("utf-8", "surrogateescape"))
    else:
        t_path.write_text(yaml.safe_dump(template, sort_keys=False))
    i_path.write_text(yaml.safe_dump(instance, sort_keys=False))
    return t_path, i_path


def test_the_corpus_has_at_least_60_cases_with_distinct_names():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_broken_input_gets_its_message(tmp_path: Path, case: Case):
    t_path, i_path = write(tmp_path, case)

    report = validate_files([t_path, i_path])

    assert not report.ok
    texts = [str(p) for _, p in report.problems]
    found = [
        p
        for _, p in report.problems
        if p.path == case.path and case.words.lower() in str(p).lower()
    ]
    assert found, (case.path, case.words, texts)
    named = str(i_path if case.file == "instance" else t_path)
    assert all(str(p).startswith(named) for p in found), texts


@pytest.mark.parametrize("case", SHAPE[:8] + SCHEMA[:8], ids=lambda c: c.id)
def test_the_seed_instance_alone_still_validates_when_another_file_is_broken(
    tmp_path: Path, case: Case
):
    """Problems stay with their file: a clean instance file next to a broken template is clean."""
    t_path, i_path = write(tmp_path, case)

    report = validate_files([t_path, i_path])

    assert report.problems
    assert all(file == str(t_path) for file, _ in report.problems)
