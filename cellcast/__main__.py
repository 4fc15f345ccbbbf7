"""`python -m cellcast ...` is the `cellcast` command."""

from cellcast.cli import main

main()
