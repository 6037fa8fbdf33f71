"""``python -m initrecipe`` runs the command line."""

import sys

from initrecipe.cli import main

sys.exit(main())
