"""``python -m gdn2`` runs the ``gdn2`` command line."""

import sys

from .cli import main

sys.exit(main())
