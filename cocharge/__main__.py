"""`python -m cocharge`: the `cocharge` command."""

from cocharge.cli import main

main()
