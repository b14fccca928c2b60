"""``python -m golf_lit`` is the ``golf-lit`` console script."""

import sys

from golf_lit.cli import main

sys.exit(main())
