"""`python -m jupyternetes_ssa`: the `jupyternetes-ssa` command."""

from jupyternetes_ssa.cli import main

main()
