from jupyternetes_ssa.cli import main

main()
