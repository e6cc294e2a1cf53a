"""``python -m cganseg``: the same as the ``cganseg`` command."""

import sys

from cganseg.cli import main

sys.exit(main())
