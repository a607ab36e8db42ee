"""`python -m cocharge.cli`: the `cocharge` command."""

from cocharge.cli import main

main()
