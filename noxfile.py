"""Sessions: lint, tests (unit), integration (local control plane), e2e-kind, demo."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests", "integration"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"
PYTHON = "3.11"


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    # Pinned: ruff's formatting rules (Markdown code blocks too) change between releases.
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests: pure functions, no cluster."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Integration tests on the local control plane (built from tools/ on first use)."""
    session.install("-e", ".[test]")
    env = {"JUPYTERNETES_TEST_CLUSTER": os.environ.get("JUPYTERNETES_TEST_CLUSTER", "local")}
    session.run("pytest", "tests/integration", *session.posargs, env=env)


@nox.session(name="e2e-kind", python=PYTHON)
def e2e_kind(session: nox.Session) -> None:
    """The integration suite on a kind cluster (needs Docker and internet; not run in CI)."""
    session.install("-e", ".[test,kind]")
    session.run(
        "pytest", "tests/integration", *session.posargs, env={"JUPYTERNETES_TEST_CLUSTER": "kind"}
    )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job end to end: local cluster unless KUBECONFIG is set, seed example, reconcile."""
    session.install("-e", ".")
    session.run("bash", "scripts/demo.sh", external=True)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks on a fresh local cluster (or --kubeconfig), N = 100, 1,000 and 5,000 by
    default; a quick check: nox -s bench -- --sizes 100."""
    session.install("-e", ".")  # bench/ needs only the package's own dependencies
    session.run("python", "-m", "bench.run", *session.posargs)
