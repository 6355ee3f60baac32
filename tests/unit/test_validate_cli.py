"""`jupyternetes-ssa validate` and `render` on hostile and broken files, as real subprocesses.

Exit codes, JSON that always parses, no traceback, and hostile inputs (alias bombs, endless or
deep files) refused within a bounded memory and time, measured in the process that reads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from validation_cases import CASES, EXAMPLES

from jupyternetes_ssa.load import MAX_DEPTH, MAX_FILE_BYTES

REPO = Path(__file__).resolve().parents[2]
SEED_TEMPLATE = EXAMPLES / "seed-template.yaml"
SEED_INSTANCE = EXAMPLES / "seed-instance.yaml"
CASE = {c.id: c for c in CASES}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyternetes_ssa", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def raw_file(tmp_path: Path, case_id: str) -> Path:
    path = tmp_path / f"{case_id}.yaml"
    path.write_bytes(CASE[case_id].raw.encode("utf-8", "surrogateescape"))
    return path


def broken_template(tmp_path: Path, case_id: str) -> Path:
    template, _ = CASE[case_id].documents()
    path = tmp_path / f"{case_id}.yaml"
    path.write_text(yaml.safe_dump(template, sort_keys=False))
    return path


# --- validate: exit codes and output -----------------------------------------------------------


def test_validate_every_shipped_example_is_clean():
    proc = cli("validate", *sorted(EXAMPLES.glob("*.yaml")))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error:" not in proc.stdout
    assert proc.stdout.strip().endswith("valid")
    docs = [d for p in EXAMPLES.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d]
    kinds = [d.get("kind") for d in docs]
    templates, instances = (
        kinds.count("JupyterNotebookTemplate"),
        kinds.count("JupyterNotebookInstance"),
    )
    assert templates and instances
    assert f"{templates} template(s), {instances} instance(s)" in proc.stdout


def test_validate_a_directory_checks_its_yaml_files(tmp_path: Path):
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "seed.yaml").write_text(SEED_TEMPLATE.read_text())
    (tmp_path / "broken.yml").write_text(CASE["nan"].raw)
    (tmp_path / "notes.txt").write_text("not yaml: [")

    proc = cli("validate", tmp_path)

    assert proc.returncode == 1
    assert f"error: {tmp_path / 'broken.yml'}:1:4: '.nan'" in proc.stdout
    assert "1 template(s), 0 instance(s) in 2 file(s): 1 problem(s)" in proc.stdout


def test_validate_json_of_the_examples_says_valid():
    proc = cli("validate", "--output", "json", *sorted(EXAMPLES.glob("*-template.yaml")))

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["valid"] is True
    assert doc["problems"] == []
    assert doc["checked"]["templates"] == 4


def test_validate_lists_every_problem_of_a_file_and_exits_1(tmp_path: Path):
    template, _ = CASE["resources-limit"].documents()
    template["spec"]["pods"][0]["lables"] = {}
    template["spec"]["pvcs"][0]["deletionPolicy"] = "Keep"
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(template))

    proc = cli("validate", path)

    assert proc.returncode == 1
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, proc.stdout
    assert all(str(path) in line for line in errors)
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "case_id", ["nan", "keys-1-and-quoted-1", "alias-bomb", "not-utf-8", "date-key", "kind-typo"]
)
def test_validate_json_is_valid_json_whatever_the_input(tmp_path: Path, case_id: str):
    proc = cli("validate", "--output", "json", raw_file(tmp_path, case_id))

    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["valid"] is False
    problem = doc["problems"][0]
    assert problem["file"].endswith(f"{case_id}.yaml")
    assert set(problem) == {"file", "subject", "path", "message", "fix", "text"}
    assert proc.stdout.isascii()


def test_validate_instance_is_rendered_against_its_template_in_another_file(tmp_path: Path):
    template, instance = CASE["label-value-from-a-variable"].documents()
    t_path, i_path = tmp_path / "t.yaml", tmp_path / "i.yaml"
    t_path.write_text(yaml.safe_dump(template))
    i_path.write_text(yaml.safe_dump(instance))

    alone = cli("validate", t_path)
    together = cli("validate", t_path, i_path)

    assert alone.returncode == 0, alone.stdout
    assert together.returncode == 1
    assert f"error: {i_path}: JupyterNotebookInstance" in together.stdout
    assert '"R&D / Compilers" is not a valid label value' in together.stdout


def test_validate_without_files_is_a_usage_error():
    proc = cli("validate")

    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_validate_help_describes_the_command():
    proc = cli("validate", "--help")

    assert proc.returncode == 0
    assert "--output" in proc.stdout and "without a cluster" in proc.stdout


# --- render: the same validation before printing anything -----------------------------------


@pytest.mark.parametrize(
    ("case_id", "words"),
    [
        ("item-field-lables", 'Did you mean "labels"'),
        ("resources-limit", 'Did you mean "limits"'),
        ("image-unquoted-placeholder", "Quote it: '{image}'"),
        ("pods-zero", "spec.pods: must be a list of items"),
        ("spec-field-pod", 'Did you mean "pods"'),
    ],
)
def test_render_refuses_what_it_used_to_drop_silently(tmp_path: Path, case_id: str, words: str):
    path = broken_template(tmp_path, case_id)

    proc = cli("render", "--template", path, "--instance", SEED_INSTANCE)

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"error: {path}: JupyterNotebookTemplate kadense/")
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_render_names_the_instance_file_for_a_rendered_label(tmp_path: Path):
    template, instance = CASE["label-value-from-a-variable"].documents()
    t_path, i_path = tmp_path / "t.yaml", tmp_path / "i.yaml"
    t_path.write_text(yaml.safe_dump(template))
    i_path.write_text(yaml.safe_dump(instance))

    proc = cli("render", "--template", t_path, "--instance", i_path)

    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {i_path}: JupyterNotebookInstance default/")
    assert "pods[notebook].labels.department" in proc.stderr


@pytest.mark.parametrize("which", ["name", "template namespace"])
def test_render_non_string_instance_fields_are_clean_errors(tmp_path: Path, which: str):
    _, instance = CASE[
        "instance-name-a-number" if which == "name" else "instance-template-namespace-a-number"
    ].documents()
    path = tmp_path / "i.yaml"
    path.write_text(yaml.safe_dump(instance))

    proc = cli("render", "--template", SEED_TEMPLATE, "--instance", path)

    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {path}: ")
    assert "Traceback" not in proc.stderr


# --- hostile inputs: bounded memory and time ---------------------------------------------------

MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from jupyternetes_ssa.validate_files import validate_files
    start = time.monotonic()
    report = validate_files([Path(p) for p in sys.argv[1:]])
    print(json.dumps({
        "seconds": time.monotonic() - start,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "problems": [str(p) for _, p in report.problems],
    }))
    """
)
MAX_RSS_MB = 400  # generous: the interpreter with the schemas loaded takes about 100
MAX_SECONDS = 60  # generous for 2 shared cores; each takes well under a second alone


def measure(*paths: Path | str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def deep_flow(tmp_path: Path) -> Path:
    path = tmp_path / "deep-flow.yaml"
    path.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    return path


def wide_bomb(tmp_path: Path) -> Path:
    """Expands to a billion values from 600 bytes: refused before anything is built."""
    path = tmp_path / "bomb.yaml"
    path.write_text(CASE["alias-bomb"].raw)
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (wide_bomb, "expands to more than"),
        (lambda tmp: raw_file(tmp, "self-referencing-alias"), "refers to itself"),
        (lambda tmp: raw_file(tmp, "deep-nesting"), f"nested deeper than {MAX_DEPTH}"),
        (deep_flow, "nest"),
        (lambda tmp: "/dev/zero", f"larger than {MAX_FILE_BYTES} bytes"),
        (lambda tmp: raw_file(tmp, "too-big"), "larger than"),
    ],
    ids=["alias-bomb", "self-alias", "deep-block", "deep-flow", "dev-zero", "too-big"],
)
def test_hostile_input_is_refused_in_bounded_memory_and_time(tmp_path: Path, make, words: str):
    result = measure(make(tmp_path))

    assert any(words in p for p in result["problems"]), result["problems"]
    assert result["max_rss_mb"] < MAX_RSS_MB, result
    assert result["seconds"] < MAX_SECONDS, result


def test_a_large_valid_file_just_under_the_limit_is_read_in_bounded_time(tmp_path: Path):
    seed = SEED_TEMPLATE.read_text()
    copies = []
    size = 0
    while size + len(seed) + 200 < MAX_FILE_BYTES:
        text = seed.replace("name: default-template", f"name: template-{len(copies)}")
        copies.append(text)
        size += len(text) + 4
    path = tmp_path / "many.yaml"
    path.write_text("---\n".join(copies))

    result = measure(path)

    assert result["problems"] == []
    assert result["max_rss_mb"] < MAX_RSS_MB, result
    assert result["seconds"] < MAX_SECONDS, result


@pytest.mark.parametrize("command", ["validate", "render"])
def test_the_cli_refuses_an_alias_bomb_cleanly(tmp_path: Path, command: str):
    bomb = wide_bomb(tmp_path)
    args = [bomb] if command == "validate" else ["--template", bomb, "--instance", SEED_INSTANCE]

    proc = cli(command, *args)

    assert proc.returncode == 1
    assert "expands to more than" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_the_image_keeps_the_schemas_the_validation_reads():
    """The Dockerfile prunes kubernetes-validate's other versions (100 MB) but not ours."""
    from jupyternetes_ssa.schema import KUBERNETES_VERSION

    dockerfile = (REPO / "Dockerfile").read_text()

    assert f"! -name 'v{KUBERNETES_VERSION}-local-strict' -prune" in dockerfile
