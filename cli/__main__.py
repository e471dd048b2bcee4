"""``python -m smartseg.cli``: the ``smartseg`` command."""

import sys

from smartseg.cli.commands import main

sys.exit(main())
