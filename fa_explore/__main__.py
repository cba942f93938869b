"""``python -m fa_explore``: the same command as ``fa-explore``."""

import sys

from .cli import main

sys.exit(main())
