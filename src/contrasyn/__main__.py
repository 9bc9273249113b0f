"""``python -m contrasyn``: the command line, also as ``torchrun ... -m contrasyn fit ...``."""

import sys

from contrasyn.cli import main

sys.exit(main())
