"""``python -m contrasyn.cli``: the command line, as ``contrasyn`` and ``python -m contrasyn``."""

import sys

from contrasyn.cli import main

sys.exit(main())
