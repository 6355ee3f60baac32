"""The command line before any cluster answers: a clear error instead of a traceback, and the
local cluster left unloaded unless its own command runs."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jupyternetes_ssa.cli import app


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubeconfig_to_nowhere(path: Path) -> Path:
    server = f"https://127.0.0.1:{closed_port()}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["reconcile", "--once"],
        ["reconcile", "--health-port=0"],  # continuous
        ["diff"],
        ["gc", "--dry-run"],
    ],
)
@pytest.mark.parametrize("config", ["unreachable", "missing"])
def test_no_cluster_is_a_clear_error_not_a_traceback(tmp_path: Path, args: list[str], config):
    path = (
        kubeconfig_to_nowhere(tmp_path / "kubeconfig")
        if config == "unreachable"
        else tmp_path / "absent"
    )
    result = CliRunner().invoke(app, [*args, f"--kubeconfig={path}"])
    assert result.exit_code == 1, result.output
    assert f"could not connect to the cluster with {path}" in result.stderr, result.output
    assert "Nothing was changed" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_the_product_command_does_not_load_the_local_cluster():
    code = "import sys, jupyternetes_ssa.cli; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "jupyternetes_ssa.local_cluster" not in loaded
    assert "cryptography" not in loaded
    assert (
        "httpx"
        not in subprocess.run(
            [sys.executable, "-c", "import jupyternetes_ssa.cli as c; print(vars(c))"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )


def test_local_cluster_runs_through_the_product_command(tmp_path: Path):
    result = CliRunner().invoke(app, ["local-cluster", "status", f"--state-dir={tmp_path}"])
    assert result.exit_code == 1
    assert "not running (no state)" in result.stderr
    helped = CliRunner().invoke(app, ["local-cluster", "--help"])
    assert helped.exit_code == 0
    assert all(word in helped.output for word in ("up", "down", "env", "status"))
