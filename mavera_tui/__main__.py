"""``python -m mavera_tui``: the same as the ``mavera-tui`` command."""

import sys

from .cli import main

sys.exit(main())
