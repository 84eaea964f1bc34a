"""``python -m concordose``: the command line (as the ``concordose`` script)."""

from concordose.cli import main

main()
