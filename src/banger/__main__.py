"""`python -m banger`: the CLI, for when the `banger` script is not on PATH."""

from banger.cli.main import main

main()
