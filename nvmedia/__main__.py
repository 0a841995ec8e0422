"""``python -m nvmedia``: the same as the ``nvmedia`` command."""

from .cli import main

raise SystemExit(main())
