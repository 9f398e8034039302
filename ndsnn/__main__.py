"""`python -m ndsnn ...` is the same as the `ndsnn` command."""

import sys

from .cli import main

sys.exit(main())
