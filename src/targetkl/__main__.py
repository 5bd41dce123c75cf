"""``python -m targetkl``: the same as the ``targetkl`` command."""

from targetkl.cli import main

raise SystemExit(main())
