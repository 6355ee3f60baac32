"""`jupyternetes-ssa local-cluster`: a command of the product, loaded only when it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from jupyternetes_ssa.cli import app


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
