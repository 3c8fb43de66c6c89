"""``python -m embedded``: the launcher's command line (see ``embedded.cli``)."""

from __future__ import annotations

import sys

from embedded.cli import main

if __name__ == "__main__":
    sys.exit(main())
